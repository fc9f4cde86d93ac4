"""``jsonl``: samples from JSON-lines files, for small data sets (no manifest, no sha256)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator, Literal

from pydantic import Field

from conan_core.data.samples import DataError, validate_sample
from conan_core.sources.engine import ReaderConfig, Record, ShardedSource, Unit


class JSONLSource(ShardedSource):
    """One JSON object per line, validated as ``kind`` samples; each file is a unit.

    ``__key__`` is the object's ``__key__`` field when present, else ``L{line}`` (1-based line
    number); ``__url__`` is the file path. Blank lines are ignored. A line that is not valid UTF-8
    is ``bad_text``; one that is not a JSON object is ``bad_json``. Splitting, shuffling, resume
    (by byte offset of the next line) and bad-data handling: conan_core.sources.engine. The
    fingerprint is the files' paths, sizes and modification times.
    """

    class Config(ReaderConfig):
        path: str | list[str] = Field(..., description="a .jsonl file or a list of them")
        kind: Literal["text", "pairs", "sts"] = Field("text", description="sample schema of the lines")
        tasks: list[str] | None = Field(None, description="pairs only: keep only these tasks "
                                        "(None = all)")

    @classmethod
    def example_config(cls, tmp_dir: Path) -> dict:
        """A JSONL file of 12 text samples in ``tmp_dir``."""
        from conan_core.data.samples import example_samples

        path = Path(tmp_dir) / "data.jsonl"
        path.write_text("".join(json.dumps(s) + "\n" for s in example_samples("text")), encoding="utf-8")
        return {"path": str(path), "kind": "text"}

    @property
    def kind(self) -> str:  # the schema comes from the config, not the class
        return self.config.kind

    def _load_units(self) -> tuple[list[Unit], str]:
        paths = self.config.path if isinstance(self.config.path, list) else [self.config.path]
        h = hashlib.sha256(self.config.kind.encode())
        units = []
        for p in paths:
            path = Path(p)
            if not path.is_file():
                raise DataError(f"JSONL file {path} does not exist", reason="missing_shard", url=str(path))
            stat = path.stat()
            h.update(f"\n{os.fspath(path)}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
            units.append(Unit(os.fspath(path), path))
        return units, h.hexdigest()

    def _records(self, unit: Unit, offset: int, index: int) -> Iterator[Record]:
        with open(unit.path, "rb") as f:
            f.seek(offset)
            for line in f:
                offset += len(line)
                index += 1
                yield Record(f"L{index}", line, offset)

    def _decode(self, record: Record, unit: Unit) -> tuple[dict, list[str]] | None:
        line = record.payload
        if not line.strip():
            return None
        repaired = False
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            if not self.config.repair_text:
                raise DataError(f"line is not valid UTF-8 (byte {exc.start}: "
                                f"{line[exc.start:exc.start + 4]!r})", reason="bad_text") from None
            text = line.decode("utf-8", "replace")
            repaired = True
        try:
            obj = json.loads(text)
        except ValueError as exc:
            raise DataError(f"line is not valid JSON ({exc})", reason="bad_json") from None
        if not isinstance(obj, dict):
            raise DataError(f"line holds a {type(obj).__name__}, expected a JSON object", reason="bad_json")
        if isinstance(obj.get("__key__"), str):
            record.key = obj["__key__"]
        sample, events = validate_sample(obj, self.config.kind, max_chars=self.config.max_chars,
                                         repair=self.config.repair_text)
        if repaired and "repaired_text" not in events:
            events.append("repaired_text")
        return sample, events

    def _keep(self, sample: dict) -> bool:
        return self.config.tasks is None or self.config.kind != "pairs" or sample["task"] in self.config.tasks

    def _filter_identity(self):
        return self.config.tasks
