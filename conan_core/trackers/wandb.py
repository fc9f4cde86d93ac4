"""``wandb``: Weights & Biases, offline unless asked otherwise (``pip install 'conan-core[tracking]'``)."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from conan_core.errors import ConanError
from conan_core.trackers.base import Tracker

ID_FILE = "conan-run-id.json"


class WandbTracker(Tracker):
    """One W&B run per run directory; each stage's scalars go under ``<stage>/`` with their own step
    axis ``<stage>/step`` (the stages of a run are separate processes, possibly separate commands).

    The W&B run id is drawn once and kept in ``RUN/wandb/conan-run-id.json``, so every stage and
    every resume of the run continues the same W&B run (``resume="allow"``); W&B's own files go to
    ``RUN/wandb/``. ``mode`` None means ``WANDB_MODE`` when set, else ``offline``: training never
    waits for a network, and ``wandb sync RUN/wandb/offline-run-*`` uploads afterwards. A resumed
    stage logs the steps after its checkpoint again, with the same training values (resume is
    exact); W&B keeps both records of those steps. Console capture and system-metrics sampling are
    off (the trainer reports throughput itself).
    """

    class Config(Tracker.Config):
        project: str = Field("conan", description="W&B project")
        entity: str | None = Field(None, description="W&B entity (user or team); None = W&B's default")
        mode: Literal["online", "offline", "disabled"] | None = Field(
            None, description="None = WANDB_MODE when set, else offline")
        name: str | None = Field(None, description="display name; None = the run config's name")
        group: str | None = Field(None, description="W&B group (e.g. an ablation grid)")
        tags: list[str] = Field(default_factory=list, description="W&B tags")

    def __init__(self, config: "WandbTracker.Config", **runtime: Any):
        super().__init__(config)
        try:
            import wandb
        except ImportError:
            raise ConanError("report_to lists wandb, but the wandb package is not installed: "
                             "pip install 'conan-core[tracking]' (or remove it from report_to)") from None
        run_dir = Path(runtime["run_dir"])
        self.stage = str(runtime["stage"])
        directory = run_dir / "wandb"
        directory.mkdir(parents=True, exist_ok=True)
        mode = config.mode or os.environ.get("WANDB_MODE") or "offline"
        settings = wandb.Settings(console="off", x_disable_stats=True, save_code=False, silent=True)
        self._run = wandb.init(project=config.project, entity=config.entity, id=run_id(directory),
                               resume="allow", dir=str(run_dir), name=config.name or runtime.get("run_name"),
                               group=config.group, tags=list(config.tags) or None, mode=mode,
                               config=runtime.get("run_config") or {}, settings=settings)
        self._run.define_metric(f"{self.stage}/step")
        self._run.define_metric(f"{self.stage}/*", step_metric=f"{self.stage}/step")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        record = {f"{self.stage}/{name}": float(value) for name, value in scalars.items()}
        record[f"{self.stage}/step"] = int(step)
        self._run.log(record)

    def close(self) -> None:
        self._run.finish()


def run_id(directory: Path) -> str:
    """The W&B run id of the run whose W&B directory is ``directory`` (drawn and saved on first use)."""
    from conan_core.fsio import atomic_write_json

    path = directory / ID_FILE
    if path.is_file():
        try:
            return str(json.loads(path.read_text(encoding="utf-8"))["id"])
        except (ValueError, KeyError) as exc:
            raise ConanError(f"{path} is damaged ({exc}); delete it to start a new W&B run") from None
    value = secrets.token_hex(4)  # W&B ids: short, lower-case, unique within a project
    atomic_write_json(path, {"id": value})
    return value
