"""TensorBoard: event files in ``RUN/tensorboard`` (``tensorboard --logdir RUN``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from . import Tracker, hyperparameters


class TensorBoardTracker(Tracker):
    name = "tensorboard"
    folder = "tensorboard"

    def open(self, run_dir: Path, identity: Mapping[str, Any], meta: Mapping[str, Any]
             ) -> dict[str, Any]:
        from torch.utils.tensorboard import FileWriter, SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        self._writer = SummaryWriter(log_dir=str(run_dir / self.folder))
        if not identity:  # a new tracked run: its settings, once
            # torch's attribute reads as None: SummaryWriter() has opened its file writer
            writer = cast(FileWriter, self._writer.file_writer)
            for summary in hparams(hyperparameters(meta["config"]), {}):
                writer.add_summary(summary)
            self._writer.add_text("config.json", "    " + json.dumps(
                meta, indent=1, sort_keys=True).replace("\n", "\n    "))
        return {"log_dir": self.folder}

    def send(self, step: int, values: Mapping[str, float]) -> None:
        for key, value in values.items():
            self._writer.add_scalar(key, value, step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()
