"""Weights & Biases: one W&B run per minidml run, its files under ``RUN/wandb``.

Offline (``WANDB_MODE=offline``) unless an API key is set (``WANDB_API_KEY`` or a
``wandb login``) or ``WANDB_MODE`` says otherwise; ``wandb sync RUN/wandb/offline-run-*``
uploads an offline run later. The project is ``WANDB_PROJECT`` (default ``minidml``).
"""

from __future__ import annotations

import netrc
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import Tracker


def _has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


class WandbTracker(Tracker):
    name = "wandb"

    def open(self, run_dir: Path, identity: Mapping[str, Any], meta: Mapping[str, Any]
             ) -> dict[str, Any]:
        import wandb

        run_id = identity.get("id") or uuid.uuid4().hex[:12]
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "minidml"), id=run_id, resume="allow",
            name=run_dir.name, dir=str(run_dir), mode=mode,
            config=None if identity else dict(meta["config"]),
            settings=wandb.Settings(silent=True, console="off"))
        return {"id": run_id}

    def send(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=step)

    def summarize(self, step: int, values: Mapping[str, float]) -> None:
        self._run.summary.update(dict(values))

    def close(self) -> None:
        self._run.finish()
