"""``tensorboard``: TensorBoard event files in ``<stage>/tb`` (``pip install 'conan-core[tracking]'``)."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from conan_core.errors import ConanError
from conan_core.trackers.base import Tracker, runtime_log_dir


class TensorBoardTracker(Tracker):
    """Every scalar as a TensorBoard scalar of the same name at its step, stored in double
    precision, so the event files hold exactly the values of ``metrics.jsonl``.

    ``tensorboard --logdir RUN`` shows each stage as a run (``pretrain/tb``, ``weak/tb`` ...). A
    resumed stage writes a new event file whose first record purges the steps after its
    checkpoint, so TensorBoard shows each step once, with the values of the resumed run.
    """

    class Config(Tracker.Config):
        subdir: str = Field("tb", description="event-file directory inside the stage directory")
        flush_secs: int = Field(30, gt=0, description="how often pending events are written to disk")

    def __init__(self, config: "TensorBoardTracker.Config", **runtime: Any):
        super().__init__(config)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConanError("report_to lists tensorboard, but the tensorboard package is not installed: "
                             "pip install 'conan-core[tracking]' (or remove it from report_to)") from None
        self.log_dir = runtime_log_dir(runtime) / config.subdir
        start = int(runtime.get("start_step", 0))
        self._writer = SummaryWriter(str(self.log_dir), purge_step=start + 1 if start > 0 else None,
                                     flush_secs=config.flush_secs)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for name, value in scalars.items():
            self._writer.add_scalar(name, float(value), int(step), new_style=True, double_precision=True)

    def close(self) -> None:
        self._writer.close()
