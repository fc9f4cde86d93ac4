"""``hf_dataset``: samples from a Hugging Face ``datasets`` dataset on local disk.

Reads a directory written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, or parquet,
JSON-lines / JSON and CSV files through ``datasets`` (``pip install 'conan-core[datasets]'``);
nothing is downloaded. Rows are read lazily, block by block, from the memory-mapped Arrow data, so
a dataset larger than memory streams; JSON and CSV files are converted into Arrow once by
``datasets`` (into its cache, ``cache_dir``) on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field, field_validator

from conan_core.data.samples import REQUIRED, DataError, validate_sample
from conan_core.sources.engine import ReaderConfig, Record, ShardedSource, Unit

#: file suffixes of each file format ``datasets`` reads
FILE_FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}

#: columns tried, in order, for each sample field when ``columns`` does not name one
#: (the layouts of sentence-transformers, FlagEmbedding and the STS benchmarks)
DETECT: dict[str, dict[str, tuple[str, ...]]] = {
    "text": {"text": ("text", "content", "document", "passage", "sentence")},
    "pairs": {"query": ("query", "anchor", "question", "prompt", "input", "sentence1", "text1"),
              "pos": ("pos", "positive", "answer", "response", "output", "document", "passage", "sentence2",
                      "text2"),
              "neg": ("neg", "negative", "negatives", "hard_negatives")},
    "sts": {"s1": ("s1", "sentence1", "text1", "sentence_a"),
            "s2": ("s2", "sentence2", "text2", "sentence_b"),
            "score": ("score", "similarity_score", "relatedness_score", "similarity", "label")},
}
#: optional fields of pairs samples, taken from a column of the same name when there is one
OPTIONAL_PAIR_FIELDS = ("id", "task", "lang", "instruction", "label")
#: every sample field ``columns`` may map
MAPPABLE = ("text", "query", "pos", "neg", "s1", "s2", "score", *OPTIONAL_PAIR_FIELDS)
_NUMBERED_NEGATIVE = re.compile(r"negative_(\d+)$")
_READ_CHUNK = 256  # rows fetched from Arrow at once: few Python calls, little memory


@dataclass(frozen=True)
class RowBlock(Unit):
    """Rows ``start .. stop - 1`` of part ``part`` (one saved dataset or one data file)."""

    part: int = 0
    start: int = 0
    stop: int = 0


class HFDatasetSource(ShardedSource):
    """Rows of a local ``datasets`` dataset as ``kind`` samples (text, pairs or sts).

    **Parts and units.** A ``save_to_disk`` directory is one part (``dataset_split`` picks the
    split of a ``DatasetDict``); data files are one part each (a directory stands for the files in
    it with a known suffix, sorted by name). Each part is cut into units of ``rows_per_unit``
    rows, which the reading engine treats like shards: split across ranks and DataLoader workers,
    shuffled per epoch, and resumed exactly (the state is the unit and the row within it).

    **Columns.** ``columns`` maps sample fields to column names (``{query: question, pos:
    answer}``); ``neg`` may name a list of columns. A field it leaves out is looked up among the
    usual names (:data:`DETECT`: ``anchor/positive/negative``, ``query/pos/neg`` lists as in
    FlagEmbedding, ``sentence1/sentence2/score``, ``text``; numbered ``negative_1 ...`` columns
    become the negatives). A list of positives keeps its first entry; a single negative becomes a
    one-element list. Pairs without a ``task`` / ``lang`` column take ``task`` / ``lang`` from the
    config (else ``default`` / ``und``). A required field without a column is an error naming the
    columns found and this ``columns`` field.

    **Samples.** ``__url__`` is the dataset directory (``[split]`` appended for a
    ``DatasetDict``) or the data file; ``__key__`` is ``row-N``, the 0-based row index in it
    (``dataset[N]``). Bad rows follow ``on_bad_sample`` like every source: skipped and counted
    under their reason, or a DataError naming the file and the row.

    The fingerprint covers the data files' paths, sizes and modification times, the saved
    dataset's ``state.json`` and the settings that change samples or units.
    """

    class Config(ReaderConfig):
        path: str | list[str] = Field(..., description="a save_to_disk directory, or parquet / JSON-lines / "
                                      "JSON / CSV files (or a directory of them, or a list)")
        format: Literal["auto", "disk", "parquet", "json", "csv"] = Field(
            "auto", description="auto: a directory with state.json or dataset_dict.json is a saved dataset, "
            "files go by their suffix (.parquet, .jsonl/.json, .csv)")
        kind: Literal["text", "pairs", "sts"] = Field("text", description="sample schema of the rows")
        dataset_split: str = Field("train", description="split of a saved DatasetDict (a saved Dataset "
                                   "has no splits)")
        columns: dict[str, str | list[str]] = Field(
            default_factory=dict, description="sample field -> column name (neg: a list of columns too); "
            "unnamed fields are detected from the usual column names")
        task: str | None = Field(None, description="pairs: task of rows without a task column")
        lang: str | None = Field(None, description="pairs: language of rows without a lang column")
        tasks: list[str] | None = Field(None, description="pairs only: keep only these tasks (None = all)")
        rows_per_unit: int = Field(1000, ge=1, description="rows per unit (the engine's shard): more units "
                                   "split better across ranks and workers")
        cache_dir: str | None = Field(None, description="where datasets keeps the Arrow form of JSON / CSV / "
                                      "parquet files (None = its default, HF_DATASETS_CACHE)")

        @field_validator("columns")
        @classmethod
        def _known_fields(cls, value: dict) -> dict:
            unknown = sorted(set(value) - set(MAPPABLE))
            if unknown:
                raise ValueError(f"unknown sample field(s) {unknown}; valid: {', '.join(MAPPABLE)}")
            lists = sorted(k for k, v in value.items() if isinstance(v, list) and k != "neg")
            if lists:
                raise ValueError(f"only neg may name a list of columns (got lists for {lists})")
            return value

    @classmethod
    def example_config(cls, tmp_dir: Path) -> dict:
        """A saved dataset (``save_to_disk``) of 12 pairs rows in FlagEmbedding's layout."""
        from datasets import Dataset

        rows = [{"query": f"query {i}", "pos": [f"passage {i}"], "neg": [f"other {i}", f"more {i}"]}
                for i in range(12)]
        path = Path(tmp_dir) / "dataset"
        with _quiet():
            Dataset.from_list(rows).save_to_disk(str(path))
        return {"path": str(path), "kind": "pairs", "task": "retrieval", "rows_per_unit": 4}

    def __init__(self, config: "HFDatasetSource.Config", **runtime: Any):
        super().__init__(config, **runtime)
        self._parts: list[Any] = []  # one datasets.Dataset per part (memory-mapped; pickles by file name)
        self._mapping: list[dict[str, Any]] = []  # per part: sample field -> column(s)

    @property
    def kind(self) -> str:  # the schema comes from the config, not the class
        return self.config.kind

    # ------------------------------------------------------------------ loading
    def _load_units(self) -> tuple[list[Unit], str]:
        cfg = self.config
        h = hashlib.sha256(json.dumps({"kind": cfg.kind, "columns": cfg.columns, "split": cfg.dataset_split,
                                       "rows": cfg.rows_per_unit, "task": cfg.task, "lang": cfg.lang},
                                      sort_keys=True).encode())
        self._parts = []
        self._mapping = []
        units: list[Unit] = []
        for label, dataset, stamp in self._open_parts():
            h.update(f"\n{stamp}".encode())
            part = len(self._parts)
            self._parts.append(dataset)
            self._mapping.append(self._columns_for(dataset.column_names, label))
            n = len(dataset)
            for start in range(0, n, cfg.rows_per_unit):
                stop = min(start + cfg.rows_per_unit, n)
                units.append(RowBlock(label, Path(label), stop - start, part=part, start=start, stop=stop))
        return units, h.hexdigest()

    def _open_parts(self) -> Iterator[tuple[str, Any, str]]:
        """(label, datasets.Dataset, fingerprint stamp) of each part, in order."""
        try:
            import datasets  # noqa: F401
        except ImportError:
            raise DataError("the hf_dataset source needs the datasets package: pip install "
                            "'conan-core[datasets]'", reason="missing_dependency") from None
        paths = self.config.path if isinstance(self.config.path, list) else [self.config.path]
        for raw in paths:
            path = Path(raw)
            fmt = self._format_of(path)
            if fmt == "disk":
                yield self._open_saved(path)
            else:
                for file in self._files_of(path, fmt):
                    yield self._open_file(file, fmt)

    def _format_of(self, path: Path) -> str:
        fmt = self.config.format
        if not path.exists():
            raise DataError(f"hf_dataset: {path} does not exist (source path); point it at a save_to_disk "
                            "directory or at parquet / JSON-lines / CSV files", reason="missing_shard",
                            url=str(path))
        if fmt != "auto":
            return fmt
        if path.is_dir():
            if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
                return "disk"
            formats = {FILE_FORMATS[p.suffix] for p in path.iterdir() if p.suffix in FILE_FORMATS}
            if len(formats) != 1:
                found = "no data files" if not formats else f"files of several formats ({sorted(formats)})"
                raise DataError(f"hf_dataset: {path} is not a saved dataset (no state.json or dataset_dict.json) "
                                f"and holds {found}; give the files themselves or set format", reason="bad_kind",
                                url=str(path))
            return formats.pop()
        if path.suffix not in FILE_FORMATS:
            raise DataError(f"hf_dataset: cannot tell the format of {path} from its suffix; valid: "
                            f"{', '.join(sorted(FILE_FORMATS))}, or set format", reason="bad_kind", url=str(path))
        return FILE_FORMATS[path.suffix]

    @staticmethod
    def _files_of(path: Path, fmt: str) -> list[Path]:
        if path.is_file():
            return [path]
        files = sorted(p for p in path.iterdir() if FILE_FORMATS.get(p.suffix) == fmt and p.is_file())
        if not files:
            raise DataError(f"hf_dataset: {path} holds no {fmt} files", reason="missing_shard", url=str(path))
        return files

    def _open_saved(self, path: Path) -> tuple[str, Any, str]:
        from datasets import DatasetDict, load_from_disk

        with _quiet():
            loaded = load_from_disk(str(path))
        stamp_files = [path / "state.json"]
        label = os.fspath(path)
        if isinstance(loaded, DatasetDict):
            split = self.config.dataset_split
            if split not in loaded:
                raise DataError(f"hf_dataset: {path} is a DatasetDict without split {split!r}; its splits: "
                                f"{', '.join(loaded)}; set dataset_split", reason="bad_kind", url=label)
            loaded = loaded[split]
            stamp_files = [path / split / "state.json"]
            label = f"{label}[{split}]"
        stamp = [label]
        for file in stamp_files:
            stamp.append(file.read_text(encoding="utf-8") if file.is_file() else "")
        for cache in loaded.cache_files:
            stat = Path(cache["filename"]).stat()
            stamp.append(f"{cache['filename']}\t{stat.st_size}\t{stat.st_mtime_ns}")
        return label, loaded, "\n".join(stamp)

    def _open_file(self, file: Path, fmt: str) -> tuple[str, Any, str]:
        from datasets import load_dataset

        stat = file.stat()
        with _quiet():
            try:
                loaded = load_dataset(fmt, data_files=[str(file)], split="train", cache_dir=self.config.cache_dir)
            except Exception as exc:  # datasets raises many types for an unreadable file
                raise DataError(f"hf_dataset: datasets cannot read {file} as {fmt} ({type(exc).__name__}: {exc})",
                                reason="truncated_shard", url=str(file)) from exc
        return os.fspath(file), loaded, f"{os.fspath(file)}\t{stat.st_size}\t{stat.st_mtime_ns}"

    def _columns_for(self, names: list[str], label: str) -> dict[str, Any]:
        """Sample field -> column (``neg``: a list of columns) for one part's column names."""
        cfg = self.config
        out: dict[str, Any] = {}
        for fld, col in cfg.columns.items():
            wanted = col if isinstance(col, list) else [col]
            missing = [c for c in wanted if c not in names]
            if missing:
                raise DataError(f"hf_dataset: columns.{fld} names {missing}, but the data has the columns "
                                f"{names}; fix columns.{fld}", reason="missing_key", url=label)
            out[fld] = col
        for fld, candidates in DETECT[cfg.kind].items():
            if fld in out:
                continue
            hit = next((c for c in candidates if c in names), None)
            if hit is None and fld == "neg":
                numbered = sorted((int(m.group(1)), c) for c in names if (m := _NUMBERED_NEGATIVE.match(c)))
                hit = [c for _, c in numbered] or None
            if hit is not None:
                out[fld] = hit
        if cfg.kind == "pairs":
            for fld in OPTIONAL_PAIR_FIELDS:
                if fld not in out and fld in names:
                    out[fld] = fld
        missing = [f for f in REQUIRED[cfg.kind] if f not in out]
        if missing:
            # the most specific schema that fits first (sts columns also fit pairs)
            fits = sorted((k for k in DETECT if k != cfg.kind
                           and all(any(c in names for c in DETECT[k][f]) for f in REQUIRED[k])),
                          key=lambda k: -len(REQUIRED[k]))
            hint = f"; the columns look like kind {fits[0]!r} (set kind: {fits[0]})" if fits else ""
            raise DataError(f"hf_dataset: no column for the {cfg.kind} field(s) {missing} (columns: "
                            f"{names}){hint}; name them with columns, e.g. columns: {{{missing[0]}: COLUMN}}",
                            reason="missing_key", url=label)
        return out

    # ------------------------------------------------------------------ reading
    def _check_unit(self, unit: Unit, st: dict[str, Any], owner: bool) -> bool:
        # the parts were opened (memory-mapped) when the units were listed: nothing to check per unit
        return True

    def _records(self, unit: RowBlock, offset: int, index: int) -> Iterator[Record]:
        dataset = self._parts[unit.part]
        row = unit.start + offset
        while row < unit.stop:
            end = min(row + _READ_CHUNK, unit.stop)
            batch = dataset[row:end]
            names = list(batch)
            for i in range(end - row):
                yield Record(f"row-{row + i}", {c: batch[c][i] for c in names}, row + i + 1 - unit.start)
            row = end

    def _decode(self, record: Record, unit: RowBlock) -> tuple[dict, list[str]]:
        row = record.payload
        mapping = self._mapping[unit.part]
        sample: dict[str, Any] = {}
        for fld, col in mapping.items():
            if fld == "neg":
                sample["neg"] = _negatives([row[c] for c in col] if isinstance(col, list) else row[col],
                                           listed=isinstance(col, list))
            elif fld == "pos":
                sample["pos"] = _first_positive(row[col])
            else:
                sample[fld] = row[col]
        if self.config.kind == "pairs":
            for fld in ("task", "lang"):
                if sample.get(fld) is None and getattr(self.config, fld) is not None:
                    sample[fld] = getattr(self.config, fld)
            for fld in OPTIONAL_PAIR_FIELDS:
                value = sample.get(fld)
                if fld in sample and value is None:  # a null optional cell means "not given"
                    del sample[fld]
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    sample[fld] = str(value)  # integer ids and class labels name things: kept as text
        return validate_sample(sample, self.config.kind, max_chars=self.config.max_chars,
                               repair=self.config.repair_text)

    def _keep(self, sample: dict) -> bool:
        return self.config.tasks is None or self.config.kind != "pairs" or sample["task"] in self.config.tasks

    def _filter_identity(self):
        return self.config.tasks



def _first_positive(value: Any) -> Any:
    """FlagEmbedding keeps positives in a list: the first one is the positive of the pair."""
    if isinstance(value, list):
        if not value:
            raise DataError("field 'pos' is an empty list; give at least one positive", reason="missing_key")
        return value[0]
    return value


def _negatives(value: Any, *, listed: bool) -> Any:
    """A list of negatives from a list column, a single-text column, or several columns."""
    if listed:
        return list(value)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return value


@contextmanager
def _quiet():
    """No progress bars from datasets while a source opens or writes data (training has its own)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()
