"""``pair_shards``: (query, positive, hard negatives) samples for contrastive training."""

from __future__ import annotations

from pydantic import Field

from conan_core.sources.shard_set import ShardReaderConfig, ShardSource


class PairShards(ShardSource):
    """Yields pairs samples (``query``, ``pos``, ``neg`` list, ``task``, ``lang``; optional ``id``,
    ``instruction``, ``label``) from a ``kind="pairs"`` shard set, keeping only ``tasks`` when set
    (the others are counted as ``filtered``).

    Splitting, shuffling, resume and bad-data handling: conan_core.sources.engine.
    """

    kind = "pairs"

    class Config(ShardReaderConfig):
        path: str | list[str] = Field(..., description="pairs shard directory (manifest.json "
                                      "inside) or a list of them")
        tasks: list[str] | None = Field(None, description="keep only samples whose task is listed "
                                        "(None = all)")

    def _keep(self, sample: dict) -> bool:
        return self.config.tasks is None or sample["task"] in self.config.tasks

    def _filter_identity(self):
        return self.config.tasks
