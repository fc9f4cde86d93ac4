"""``conan eval``, ``conan encode`` and ``conan export``: use a trained run.

* ``conan eval RUN [--data DIR] [--task retrieval,sts ...]`` prints model-vs-BM25 metrics and
  writes ``RUN/eval/metrics.json`` (tasks evaluated now replace their old entries);
* ``conan encode RUN --input FILE --out FILE.npy`` embeds a text / JSONL file;
* ``conan export RUN [--out DIR]`` writes a transformers + sentence-transformers directory.

``RUN`` is a run directory (the latest finished stage is used), a stage's ``final/`` or an export.
"""

from __future__ import annotations

import sys
from pathlib import Path

from conan_core.errors import ConanError


def add_commands(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate a run next to BM25 (retrieval, cross-lingual, STS, classification)")
    p.add_argument("run", help="run directory, stage final/ directory or export directory")
    p.add_argument("--data", help="data root, eval root or task directory (default: the run's data: "
                                  "data.dir of its config.yaml, else RUN/data)")
    p.add_argument("--task", action="append", default=[], metavar="KEY[,KEY]",
                   help="evaluator keys to run (repeatable or comma-separated; default: the run config's "
                        "eval.evaluators, else all)")
    p.add_argument("--batch-size", type=int, default=None, help="texts per encode call")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--out", help="metrics.json to write (default: RUN/eval/metrics.json for a run directory)")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser("encode", help="embed the texts of a file into a .npy array")
    p.add_argument("run", help="run directory, stage final/ directory or export directory")
    p.add_argument("--input", required=True, help=".txt (one text per line) or .jsonl (field --field)")
    p.add_argument("--out", required=True, help="output .npy file (float32 [N, dim])")
    p.add_argument("--field", default="text", help="JSONL field holding the text (default: text)")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument("--query", action="store_true", help="encode as queries (the run's query instruction)")
    kind.add_argument("--instruction", default=None, help="encode with this instruction")
    p.add_argument("--dim", type=int, default=None, help="Matryoshka dimension (prefix, re-normalised)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--no-normalize", action="store_true", help="keep raw (unnormalised) embeddings")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda when available)")
    p.set_defaults(func=cmd_encode)

    p = subparsers.add_parser("export", help="write a transformers + sentence-transformers loadable directory")
    p.add_argument("run", help="run directory (latest finished stage) or a stage final/ directory")
    p.add_argument("--out", help="output directory (default: RUN/export)")
    p.add_argument("--max-length", type=int, default=None, help="max tokens for sentence-transformers "
                                                                  "(default: the embedder's)")
    p.add_argument("--verify", action="store_true", help="reload the export and check it reproduces the embeddings")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out that is not a previous export (files of the export's "
                        "names are replaced, others kept); a previous export is replaced without it")
    p.set_defaults(func=cmd_export)


def _run_config(run: Path) -> dict:
    file = run / "config.yaml"
    if not file.is_file():
        return {}
    import yaml

    data = yaml.safe_load(file.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _task_specs(args, cfg: dict) -> tuple[list[dict], bool]:
    """(evaluator specs, whether they were asked for explicitly)."""
    from conan_core.eval.report import DEFAULT_EVALUATORS

    keys = [k.strip() for item in args.task for k in item.split(",") if k.strip()]
    configured = (cfg.get("eval") or {}).get("evaluators") if isinstance(cfg.get("eval"), dict) else None
    if not keys:
        return [dict(s) for s in (configured or DEFAULT_EVALUATORS)], False
    by_key = {s["type"]: dict(s) for s in (configured or []) if isinstance(s, dict) and "type" in s}
    return [by_key.get(k, {"type": k}) for k in keys], True


def cmd_eval(args) -> int:
    from conan_core.embedder import Embedder
    from conan_core.eval.report import evaluate_all, format_table, read_metrics, write_metrics

    run = Path(args.run)
    cfg = _run_config(run)
    if args.data:
        data = Path(args.data)
    else:
        data_cfg = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        data = Path(data_cfg["dir"]) if data_cfg.get("dir") else run / "data"
    specs, explicit = _task_specs(args, cfg)
    embedder = Embedder.load(run, device=args.device)
    print(f"evaluating {embedder.source} on {data}", file=sys.stderr)
    results = evaluate_all(embedder, data, specs, missing="raise" if explicit else "skip",
                           batch_size=args.batch_size, log=lambda msg: print(msg, file=sys.stderr))
    if not results:
        raise ConanError(f"no evaluation data found under {data} (expected eval/retrieval/, eval/cross_lingual/, "
                         "eval/sts.jsonl or eval/classification.jsonl); pass --data DIR")
    print(format_table(results))
    out = Path(args.out) if args.out else (run / "eval" / "metrics.json" if (run / "config.yaml").is_file() else None)
    if out is not None:
        with _run_lock_if_inside(run, out):
            merged = {**read_metrics(out), **results}
            write_metrics(merged, out)
        print(f"wrote {out}", file=sys.stderr)
    return 0


def _run_lock_if_inside(run: Path, out: Path):
    """The run's lock (:class:`~conan_core.rundir.RunLock`) when ``out`` lies inside the run
    directory ``run`` (a run: it has config.yaml), else a no-op context."""
    from contextlib import nullcontext

    from conan_core.rundir import RunLock

    if (run / "config.yaml").is_file() and run.resolve() in out.resolve().parents:
        return RunLock(run)
    return nullcontext()


def read_texts(path: Path, field: str = "text") -> list[str]:
    """Texts of a .txt file (one per line, line ends stripped) or a .jsonl file (``field`` of each
    line); a bad line raises with file and line number."""
    if not path.is_file():
        raise ConanError(f"{path}: input file not found")
    if path.suffix not in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as fh:
            return [line.rstrip("\r\n") for line in fh]
    from conan_core.jsonl import iter_jsonl

    texts = []
    for lineno, obj in iter_jsonl(path):
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict) and isinstance(obj.get(field), str):
            texts.append(obj[field])
        else:
            raise ConanError(f"{path}:{lineno}: expected an object with a string field {field!r} "
                             "(use --field to pick another)")
    return texts


def cmd_encode(args) -> int:
    import numpy as np

    from conan_core.embedder import Embedder

    texts = read_texts(Path(args.input), args.field)
    embedder = Embedder.load(args.run, device=args.device)
    instruction = embedder.query_instruction if args.query else args.instruction
    emb = embedder.encode(texts, batch_size=args.batch_size, instruction=instruction, dim=args.dim,
                          normalize=False if args.no_normalize else None)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, emb)
    print(f"wrote {out}: {emb.shape[0]} x {emb.shape[1]} float32", file=sys.stderr)
    return 0


def cmd_export(args) -> int:
    from conan_core.export import export_run

    run = Path(args.run)
    out = Path(args.out) if args.out else run / "export"
    with _run_lock_if_inside(run, out):
        path = export_run(run, out, max_length=args.max_length, verify=args.verify, overwrite=args.overwrite)
    print(f"exported {run} to {path}", file=sys.stderr)
    # the directory's code files import the installed conan_core; transformers runs them only when
    # trusted, or uses the classes conan_core.export.remote_code registers
    print(f"  conan_core:            Embedder.load({str(path)!r})")
    print(f"  sentence-transformers: SentenceTransformer({str(path)!r}, trust_remote_code=True)")
    print(f"  transformers:          AutoModel.from_pretrained({str(path)!r}, trust_remote_code=True)")
    print("  (both need conan_core installed; without trust_remote_code, import conan_core.export.remote_code first)")
    return 0
