"""Weights & Biases: one W&B run per minidml run, its files under ``RUN/wandb``.

Offline (``WANDB_MODE=offline``) unless an API key is set (``WANDB_API_KEY`` or a
``wandb login``) or ``WANDB_MODE`` says otherwise; ``wandb sync RUN/wandb/offline-run-*``
uploads an offline run later. The project is ``WANDB_PROJECT`` (default ``minidml``).

W&B's service writes its file in 32 KB blocks and dies with the process, so a step it was
given is kept only once the run closes: on a normal end, on Ctrl-C or any other exit that
runs ``atexit`` (this tracker closes the run there). After a ``kill -9`` the resumed run
therefore sends again every step since the last clean close, from ``metrics.jsonl`` up to
the checkpoint and live after it: no step is missing. Offline, a step the killed process's
file did keep is then in two offline runs with the same values; online, W&B keeps the first.
"""

from __future__ import annotations

import atexit
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
    durable = False  # see the module docstring

    def open(self, run_dir: Path, identity: Mapping[str, Any], meta: Mapping[str, Any]
             ) -> dict[str, Any]:
        import wandb

        run_id = identity.get("id") or uuid.uuid4().hex[:12]
        mode = os.environ.get("WANDB_MODE") or ("online" if _has_api_key() else "offline")
        self._run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "minidml"), id=run_id, resume="allow",
            name=run_dir.name, dir=str(run_dir),
            # WANDB_MODE as set: wandb checks it, and takes more than init's type lists (dryrun);
            # (unused where the wandb extra is absent and wandb reads as Any)
            mode=mode,  # type: ignore[arg-type, unused-ignore]
            config=None if identity else dict(meta["config"]),
            settings=wandb.Settings(silent=True, console="off"))
        atexit.register(self.finish)  # before W&B's own exit handler, which closes the run
        return {"id": run_id}

    def send(self, step: int, values: Mapping[str, float]) -> None:
        self._run.log(dict(values), step=step)

    def summarize(self, step: int, values: Mapping[str, float]) -> None:
        self._run.summary.update(dict(values))

    def close(self) -> None:
        atexit.unregister(self.finish)
        self._run.finish()
