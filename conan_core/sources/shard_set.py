"""Tar shard sets with a manifest (``conan data write-shards``) as sources: the base of
``text_shards``, ``pair_shards`` and ``sts_shards`` (reading engine: :mod:`conan_core.sources.engine`)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterator

from pydantic import Field

from conan_core.data.samples import DataError, decode_members, validate_sample
from conan_core.data.shards import Manifest, iter_tar_groups, read_manifest
from conan_core.sources.engine import ReaderConfig, Record, ShardedSource, Unit


class ShardReaderConfig(ReaderConfig):
    verify: bool = Field(True, description="compare each shard's size and sha256 with the manifest "
                         "before reading it")


class ShardSource(ShardedSource):
    """Reads webdataset shard sets (directories with a manifest) of the class's ``kind``."""

    Config = ShardReaderConfig


    @classmethod
    def example_config(cls, tmp_dir: Path) -> dict:
        """A shard set of ``cls.kind`` samples (3 shards) in ``tmp_dir``."""
        from conan_core.data.samples import example_samples
        from conan_core.data.shards import write_shards

        write_shards(example_samples(cls.kind), tmp_dir, kind=cls.kind, shard_size=5)
        return {"path": str(tmp_dir)}

    def _load_units(self) -> tuple[list[Unit], str]:
        paths = self.config.path if isinstance(self.config.path, list) else [self.config.path]
        units: list[Unit] = []
        prints = []
        for directory in paths:
            manifest: Manifest = read_manifest(directory)
            if manifest.kind != self.kind:
                raise DataError(f"{Path(directory) / 'manifest.json'}: shards of kind {manifest.kind!r}, "
                                f"but {type(self).__name__} reads {self.kind!r}; use the "
                                f"{manifest.kind}_shards source", reason="bad_kind")
            prints.append(manifest.fingerprint())
            for shard in manifest.shards:
                path = manifest.path(shard)
                units.append(Unit(os.fspath(path), path, shard.count, shard.sha256, shard.bytes,
                                  manifest.fields))
        return units, hashlib.sha256("\n".join(prints).encode()).hexdigest()

    def _records(self, unit: Unit, offset: int, index: int) -> Iterator[Record]:
        for group in iter_tar_groups(unit.path, offset):
            yield Record(group.key, group.members, group.next_offset, group.repeated)

    def _decode(self, record: Record, unit: Unit) -> tuple[dict, list[str]]:
        if record.repeated:
            raise DataError("key appears again after other keys (interleaved members or a duplicate "
                            "key); write each sample's members together", reason="interleaved_key")
        missing = [f for f in unit.fields if f not in record.payload]
        if missing:
            raise DataError(f"partial sample: has members {sorted(record.payload)}, missing {missing}",
                            reason="partial_sample")
        raw, events = decode_members(record.payload, repair=self.config.repair_text)
        sample, more = validate_sample(raw, self.kind, max_chars=self.config.max_chars,
                                       repair=self.config.repair_text)
        return sample, events + [e for e in more if e not in events]
