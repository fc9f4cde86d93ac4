"""Running several evaluators on one data root, the results table, and ``eval/metrics.json``.

Results are ``{task name: {metric: value}}`` as returned by each evaluator's ``evaluate``; the
table puts the model and its BM25 reference side by side (one row per metric, counts in the task
heading).

Two domains: an eval root (``<data>/eval``) holds the *in-domain* sets (held-out items of the
sources training used), and may hold ``out_of_domain/`` with the same layout, built from sources
training never saw (see :mod:`conan_core.data.demo`). :func:`evaluate_domains` runs the
evaluators on both; in-domain results keep the bare task names (``retrieval``), out-of-domain
ones are named ``out_of_domain/<task>``, so one flat ``metrics.json`` holds both and readers of
the in-domain numbers need not change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from conan_core.eval.base import is_count
from conan_core.eval.data import MissingEvalDataError

IN_DOMAIN = "in_domain"
OUT_OF_DOMAIN = "out_of_domain"
DOMAINS = (IN_DOMAIN, OUT_OF_DOMAIN)

DEFAULT_EVALUATORS = ({"type": "retrieval"}, {"type": "cross_lingual"}, {"type": "sts"},
                      {"type": "classification"})


def evaluate_all(embedder, data: str | Path, evaluators: Iterable[Mapping[str, Any] | Any] | None = None,
                 *, missing: str = "skip", batch_size: int | None = None,
                 log=None) -> dict[str, dict]:
    """Run each evaluator (spec dicts or built evaluators; default all four) on the data root.

    ``missing="skip"`` leaves out a task whose data files are absent (reported through ``log``);
    ``"raise"`` raises :class:`MissingEvalDataError`. A present but malformed file always raises.
    ``batch_size`` overrides each spec's. Task names are the evaluator keys (``sts``), with
    ``#2`` ... appended to repeated keys.
    """
    from conan_core.registries import REGISTRIES

    if missing not in ("skip", "raise"):
        raise ValueError(f"missing must be 'skip' or 'raise', got {missing!r}")
    results: dict[str, dict] = {}
    for i, spec in enumerate(evaluators if evaluators is not None else DEFAULT_EVALUATORS):
        if isinstance(spec, Mapping):
            spec = dict(spec)
            if batch_size is not None and "batch_size" not in spec:
                spec["batch_size"] = batch_size
            evaluator = REGISTRIES["evaluators"].build(spec, f"eval.evaluators[{i}]")
            key = spec["type"]
        else:
            evaluator, key = spec, getattr(spec, "task", type(spec).__name__)
        name, n = key, 2
        while name in results:
            name, n = f"{key}#{n}", n + 1
        try:
            loaded = evaluator.load(data)
        except MissingEvalDataError as exc:
            if missing == "raise":
                raise
            if log is not None:
                log(f"skipping {name}: {exc}")
            continue
        results[name] = evaluator.evaluate(embedder, loaded)
    return results


def domain_roots(data: str | Path) -> dict[str, Path]:
    """``{"in_domain": eval root, "out_of_domain": its out_of_domain/ directory}`` (the latter only
    when it exists). ``data`` is a data root (holding ``eval/``), an eval root or a task directory."""
    data = Path(data)
    root = data / "eval" if (data / "eval").is_dir() else data
    roots = {IN_DOMAIN: root}
    if (root / OUT_OF_DOMAIN).is_dir():
        roots[OUT_OF_DOMAIN] = root / OUT_OF_DOMAIN
    return roots


def split_domain(name: str) -> tuple[str, str]:
    """``"out_of_domain/retrieval"`` -> (``"out_of_domain"``, ``"retrieval"``); a bare task name is
    in-domain."""
    head, sep, rest = name.partition("/")
    return (OUT_OF_DOMAIN, rest) if sep and head == OUT_OF_DOMAIN else (IN_DOMAIN, name)


def by_domain(results: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{"in_domain": {task: metrics}, "out_of_domain": {task: metrics}}`` of flat results (a domain
    without results is left out)."""
    out: dict[str, dict[str, Any]] = {}
    for name, metrics in results.items():
        domain, task = split_domain(name)
        out.setdefault(domain, {})[task] = metrics
    return out


def evaluate_domains(embedder, data: str | Path, evaluators: Iterable[Mapping[str, Any] | Any] | None = None,
                     *, missing: str = "skip", batch_size: int | None = None, log=None) -> dict[str, dict]:
    """:func:`evaluate_all` on the in-domain eval root and, when present, on its ``out_of_domain/``.

    Out-of-domain results are named ``out_of_domain/<task>``; a task without out-of-domain data is
    skipped there whatever ``missing`` says (``missing`` applies to the in-domain root). Every
    result holds the model's metrics and BM25's on the same queries and documents.
    """
    specs = None if evaluators is None else list(evaluators)
    roots = domain_roots(data)
    results = evaluate_all(embedder, roots[IN_DOMAIN], specs, missing=missing, batch_size=batch_size, log=log)
    if OUT_OF_DOMAIN in roots:
        ood = evaluate_all(embedder, roots[OUT_OF_DOMAIN], specs, missing="skip", batch_size=batch_size,
                           log=None if log is None else (lambda msg: log(f"{OUT_OF_DOMAIN}: {msg}")))
        results.update({f"{OUT_OF_DOMAIN}/{name}": metrics for name, metrics in ood.items()})
    return results


def format_table(results: Mapping[str, Mapping[str, Any]], digits: int = 4) -> str:
    """A plain-text table: one block per task, rows ``metric  model  bm25  delta``.

    Aggregate metrics come before per-language ones (``lang/en/recall@20``); counts go in the task
    heading, and so does the domain when the results hold out-of-domain tasks (each in-domain
    block is then followed by its out-of-domain one). Missing BM25 values print as ``-``.
    """
    rows: list[tuple[str, str, str, str]] = []
    two = any(split_domain(name)[0] == OUT_OF_DOMAIN for name in results)
    order = sorted(results, key=lambda name: (_first_index(results, split_domain(name)[1]),
                                              DOMAINS.index(split_domain(name)[0])))
    for name in order:
        metrics = results[name]
        domain, task = split_domain(name)
        counts = ", ".join(f"{k}={metrics[k]}" for k in metrics if is_count(k) and "/" not in k)
        head = f"{task} [{domain}]" if two else task
        rows.append((head + (f" ({counts})" if counts else ""), "", "", ""))
        names = [k for k in metrics if not k.startswith("bm25/") and not is_count(k)]
        names = [k for k in names if "/" not in k] + [k for k in names if "/" in k]
        for k in names:
            model = metrics[k]
            ref = metrics.get(f"bm25/{k}")
            delta = (_fmt(model - ref, digits, signed=True)
                     if isinstance(ref, (int, float)) and isinstance(model, (int, float)) else "-")
            rows.append((f"  {k}", _fmt(model, digits), _fmt(ref, digits), delta))
    header = ("task / metric", "model", "bm25", "delta")
    # task headings (value columns empty) print whole and do not widen the metric column
    metric_rows = [header, *(r for r in rows if r[1])]
    widths = [max(len(r[i]) for r in metric_rows) for i in range(4)]
    line = lambda r: r[0] if not r[1] and r is not header else "  ".join(  # noqa: E731
        (c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])) for i, c in enumerate(r)).rstrip()
    out = [line(header), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def _first_index(results: Mapping[str, Any], task: str) -> int:
    """Position of the first result of ``task`` (either domain), so blocks keep the evaluators' order."""
    return next(i for i, name in enumerate(results) if split_domain(name)[1] == task)


def _fmt(value: Any, digits: int, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
    return str(value)


def write_metrics(results: Mapping[str, Mapping[str, Any]], path: str | Path) -> Path:
    """Write ``{task: {metric: value}}`` as JSON (NaN/inf as null) to ``path``, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(_clean(results), indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def read_metrics(path: str | Path) -> dict[str, dict]:
    """``{task: {metric: value}}`` of a metrics.json written by :func:`write_metrics` ({} when absent)."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}


def _clean(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
