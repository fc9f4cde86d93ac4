"""``text_shards``: pretraining text from webdataset shards (samples ``{"text": str}``)."""

from __future__ import annotations

from pydantic import Field

from conan_core.sources.shard_set import ShardReaderConfig, ShardSource


class TextShards(ShardSource):
    """Yields ``{"text": str, "__key__", "__url__"}`` from a ``kind="text"`` shard set.

    Splitting, shuffling, resume and bad-data handling: conan_core.sources.engine.
    """

    kind = "text"

    class Config(ShardReaderConfig):
        path: str | list[str] = Field(..., description="text shard directory (manifest.json "
                                      "inside) or a list of them")
