"""``sts_shards``: STS pairs with a gold score (samples ``{"s1", "s2", "score": float}``)."""

from __future__ import annotations

from pydantic import Field

from conan_core.sources.shard_set import ShardReaderConfig, ShardSource


class STSShards(ShardSource):
    """Yields ``{"s1": str, "s2": str, "score": float, "__key__", "__url__"}`` from a ``kind="sts"``
    shard set; a score that is not a finite number is a ``bad_score`` sample.

    Splitting, shuffling, resume and bad-data handling: conan_core.sources.engine.
    """

    kind = "sts"

    class Config(ShardReaderConfig):
        path: str | list[str] = Field(..., description="STS shard directory (manifest.json "
                                      "inside) or a list of them")
