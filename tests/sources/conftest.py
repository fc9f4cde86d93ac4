"""Shard sets for the source tests (written in tmp_path by conan_core's own writer)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conan_core.data.shards import write_shards


class Sets:
    """Shard-set writers handed to tests by the ``sets`` fixture (import-mode independent)."""

    @staticmethod
    def text(directory: Path, n_shards: int, per: int) -> Path:
        """``n_shards`` x ``per`` text samples, keys s{shard:03d}_{i:04d} (the reliability harness)."""
        samples = ({"__key__": f"s{s:03d}_{i:04d}", "text": f"text {s} {i}"}
                   for s in range(n_shards) for i in range(per))
        write_shards(samples, directory, kind="text", shard_size=per)
        return directory

    @staticmethod
    def pairs(directory: Path, n: int, shard_size: int) -> Path:
        """``n`` pairs samples over three tasks (i % 3)."""
        tasks = ["retrieval", "sts_like", "classification"]
        samples = ({"__key__": f"p{i:05d}", "query": f"q{i}", "pos": f"p{i}", "neg": [f"n{i}a", f"n{i}b"],
                    "task": tasks[i % 3], "lang": "en"} for i in range(n))
        write_shards(samples, directory, kind="pairs", shard_size=shard_size)
        return directory


@pytest.fixture
def sets() -> type[Sets]:
    return Sets


@pytest.fixture
def text8(tmp_path: Path) -> Path:
    """8 shards x 24 samples (the reliability harness shape)."""
    return Sets.text(tmp_path / "text8", 8, 24)
