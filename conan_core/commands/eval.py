"""``conan eval``, ``conan encode`` and ``conan export``: use a trained run.

* ``conan eval RUN [--data DIR] [--task retrieval,sts ...]`` prints model-vs-BM25 metrics, in-domain
  and, when the data has ``eval/out_of_domain/``, out-of-domain (``out_of_domain/<task>``), and
  writes ``RUN/eval/metrics.json`` (tasks evaluated now replace their old entries);
  ``conan eval RUN --mteb TASK ...`` runs mteb instead (local files or already cached tasks);
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
    p.add_argument("--mteb", action="append", default=[], metavar="TASK",
                   help="run mteb instead of the built-in evaluators (repeatable): an mteb task name whose data "
                        "is already in the local Hugging Face cache (nothing is downloaded), or a local retrieval "
                        "directory (queries/corpus/qrels.jsonl) or sts.jsonl file; needs conan-core[mteb]")
    p.add_argument("--mteb-cache", default=None, metavar="DIR",
                   help="mteb result cache (default: RUN/eval/mteb for a run directory, else mteb's own "
                        "cache, $MTEB_CACHE or ~/.cache/mteb); results go to DIR/results/<model>/<revision>/")
    p.add_argument("--mteb-overwrite", action="store_true",
                   help="re-evaluate even when the cache holds this model revision's results")
    p.add_argument("--language", action="append", default=None, metavar="CODE",
                   help="a language the model is meant for, ISO 639-3 + script (eng-Latn); recorded in mteb's "
                        "model metadata (repeatable)")
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
    p.add_argument("--packing", action="store_true",
                   help="run each batch as packed rows (no padding; same embeddings to float rounding)")
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
    from conan_core.eval.report import evaluate_domains, format_table, read_metrics, write_metrics

    run = Path(args.run)
    if args.mteb:
        return _eval_mteb(args, run)
    cfg = _run_config(run)
    if args.data:
        data = Path(args.data)
    else:
        data_cfg = cfg.get("data") if isinstance(cfg.get("data"), dict) else {}
        data = Path(data_cfg["dir"]) if data_cfg.get("dir") else run / "data"
    specs, explicit = _task_specs(args, cfg)
    embedder = Embedder.load(run, device=args.device)
    print(f"evaluating {embedder.source} on {data}", file=sys.stderr)
    results = evaluate_domains(embedder, data, specs, missing="raise" if explicit else "skip",
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


class EncodeInputError(ConanError):
    """``conan encode``'s input file is missing or unreadable (the message names the file and line)."""

    exit_code = 3


class OutputPathError(ConanError):
    """An output path that cannot be written (the message names the path and the reason)."""

    exit_code = 4


def _eval_mteb(args, run: Path) -> int:
    """``conan eval RUN --mteb TASK ...``: mteb on local or already cached tasks; prints one row per
    task split and subset with its main score."""
    from conan_core.embedder import Embedder
    from conan_core.eval.mteb import MTEBEncoder, require_mteb, resolve_tasks

    mteb = require_mteb()
    tasks = resolve_tasks(args.mteb)  # every task's data before any model work: absent data fails fast
    embedder = Embedder.load(run, device=args.device)
    model = MTEBEncoder(embedder, batch_size=args.batch_size or 32, languages=args.language)
    meta = model.mteb_model_meta
    if args.mteb_cache:
        cache_dir = Path(args.mteb_cache)
    elif (run / "config.yaml").is_file():
        cache_dir = run / "eval" / "mteb"
    else:
        cache_dir = None
    cache = mteb.ResultCache(cache_path=cache_dir) if cache_dir is not None else mteb.ResultCache()
    print(f"mteb: {meta.name} revision {meta.revision} on {len(tasks)} task(s); results in {cache.cache_path}",
          file=sys.stderr)
    result = mteb.evaluate(model, tasks, cache=cache,
                           overwrite_strategy="always" if args.mteb_overwrite else "only-missing",
                           encode_kwargs={"batch_size": args.batch_size or 32}, show_progress_bar=sys.stderr.isatty())
    print(format_mteb_results(result, {t.metadata.name: t.metadata.main_score for t in tasks}))
    for task in tasks:
        print(f"wrote {cache.get_task_result_path(task.metadata.name, meta)}", file=sys.stderr)
    return 0


def format_mteb_results(result, main_scores: dict[str, str] | None = None) -> str:
    """A plain table of an ``mteb.ModelResult``: task, split, subset, main score name (from
    ``main_scores``: task name -> the task's ``metadata.main_score``) and value."""
    rows = [("task", "split", "subset", "main score", "value")]
    for task_result in result.task_results:
        for split, entries in task_result.scores.items():
            for entry in entries:
                name = (main_scores or {}).get(task_result.task_name, "main_score")
                rows.append((task_result.task_name, split, str(entry.get("hf_subset", "default")), name,
                             f"{entry['main_score']:.4f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def read_texts(path: Path, field: str = "text") -> list[str]:
    """Texts of a .txt file (one per line, line ends stripped) or a .jsonl file (``field`` of each
    line). A missing file, a line that is not UTF-8, or a JSONL line without the field raises
    :class:`EncodeInputError` naming the file and the 1-based line number."""
    if not path.is_file():
        raise EncodeInputError(f"{path}: input file not found (expected a .txt file with one text per line "
                               "or a .jsonl file)")
    try:
        if path.suffix not in (".jsonl", ".json"):
            return _read_txt(path)
        return _read_jsonl(path, field)
    except OSError as exc:
        raise EncodeInputError(f"{path}: cannot read the input file ({exc.strerror or exc})") from None


def _read_txt(path: Path) -> list[str]:
    from conan_core.jsonl import decode_line

    texts = []
    # bytes per line, decoded one by one: a decoding error then knows its line (a text-mode read
    # only reports a byte offset into a buffered chunk)
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            texts.append(decode_line(path, lineno, raw, error=EncodeInputError).rstrip("\r\n"))
    return texts


def _read_jsonl(path: Path, field: str) -> list[str]:
    from conan_core.jsonl import iter_jsonl

    texts = []
    for lineno, obj in iter_jsonl(path, error=EncodeInputError):
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict) and isinstance(obj.get(field), str):
            texts.append(obj[field])
        else:
            raise EncodeInputError(f"{path}:{lineno}: expected an object with a string field {field!r} "
                                   "(use --field to pick another)")
    return texts


def _npy_path(out: Path) -> Path:
    """``out`` with numpy's rule: a name without ``.npy`` gets it appended. A directory is refused
    (numpy would write a ``DIR.npy`` beside it)."""
    if out.is_dir():
        raise OutputPathError(f"{out}: --out is a directory; give a file name such as {out / 'emb.npy'}")
    return out if out.suffix == ".npy" else out.with_name(out.name + ".npy")


def _open_output(out: Path):
    """A temporary file beside ``out``, opened for writing now (so an unwritable path fails before
    the encoding work rather than after it, and a failed run leaves no half-written ``out``);
    :func:`_commit_output` renames it onto ``out``. Created with mode 0666 minus the umask, like
    any file the user writes."""
    import os

    if out.is_dir():
        raise OutputPathError(f"{out}: --out is a directory; give a file name such as {out / 'emb.npy'}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        return open(tmp, "wb")  # noqa: SIM115  (closed by _commit_output or cmd_encode)
    except OSError as exc:
        raise OutputPathError(f"{out}: cannot write the output ({exc.strerror or exc}); choose a writable "
                              "--out path or fix the directory's permissions") from None


def _commit_output(tmp, out: Path, array) -> None:
    import os

    import numpy as np

    try:
        with tmp:
            np.save(tmp, array)
        os.replace(tmp.name, out)
    except OSError as exc:
        Path(tmp.name).unlink(missing_ok=True)
        raise OutputPathError(f"{out}: writing the output failed ({exc.strerror or exc}); check free space "
                              "and permissions of that directory") from None


def cmd_encode(args) -> int:
    from conan_core.embedder import Embedder

    texts = read_texts(Path(args.input), args.field)
    out = _npy_path(Path(args.out))
    tmp = _open_output(out)
    try:
        embedder = Embedder.load(args.run, device=args.device)
        instruction = embedder.query_instruction if args.query else args.instruction
        emb = embedder.encode(texts, batch_size=args.batch_size, instruction=instruction, dim=args.dim,
                              normalize=False if args.no_normalize else None, packing=args.packing)
    except BaseException:
        tmp.close()
        Path(tmp.name).unlink(missing_ok=True)
        raise
    _commit_output(tmp, out, emb)
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
