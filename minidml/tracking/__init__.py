"""Experiment tracking: a run's metrics sent to TensorBoard, Weights & Biases or MLflow as
it trains (``--log-to tensorboard,wandb,mlflow``, ``TrainConfig.log_to``).

Each tracker is a :class:`~minidml.Callback` in its own module here, and imports its library
only when it is used (the extras ``minidml[tensorboard]``, ``minidml[wandb]`` and
``minidml[mlflow]``). What a tracker receives, at the record's training step:

- every record of ``metrics.jsonl``, one series per number: ``train/loss/0`` (a list is one
  series per student), ``train/lr``, ``train/tokens_per_s``, ``eval/val_loss/1``,
  ``eval/ensemble_val_loss``, the outer steps' ``omega/omega/0``, ``omega/hypergrad/0`` and
  ``omega/direct/0``, and the time budget's ``plan/total_steps``;
- the run's settings (``config.json``) as hyperparameters, once;
- the scores that :func:`sync` is given (``compare`` sends each arm's suite scores).

A step is sent once all its records are in (when the next step's first record arrives, at a
checkpoint and at the end). Only rank 0 of a distributed run tracks. ``tracking.json`` in
the run directory keeps each tracked run's identity and the last step sent, so a resumed run
continues the same tracked run and sends only the steps after that one: the steps that the
interrupted process sent after its last checkpoint stay as they were (resumption recomputes
them bit for bit; only their timings differ), and none is sent twice. Were a process killed
in the instant between a tracker taking a step and ``tracking.json`` recording it, that one
step would be sent again. A tracker that keeps a step only once its run closes (W&B, see
:mod:`minidml.tracking.wandb`) records the last step sent only then; on starting, every
tracker first sends what ``metrics.jsonl`` has beyond its last step sent.

A tracker whose library fails once the run is training (a server that does not answer, a
full disk) does not end the run: it warns once, in one line, and stops, while training goes
on. ``metrics.jsonl`` keeps every step, and the tracked run gets what it lacks when the run is
resumed or when :func:`sync` is called (``compare`` calls it with the arm's scores).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import _io
from ..config import TRACKERS
from ..errors import MinidmlError, describe
from ..rundir import read_metrics
from ..trainer import Callback

if TYPE_CHECKING:
    from ..trainer import Trainer

# name: (its module here, its class, the libraries it needs, the extra that installs them)
BACKENDS: dict[str, tuple[str, str, tuple[str, ...], str]] = {
    "tensorboard": ("tensorboard", "TensorBoardTracker", ("tensorboard",), "tensorboard"),
    "wandb": ("wandb", "WandbTracker", ("wandb",), "wandb"),
    "mlflow": ("mlflow", "MLflowTracker", ("mlflow", "sqlalchemy"), "mlflow"),
}
assert tuple(BACKENDS) == TRACKERS
NAMES = TRACKERS
STATE = "tracking.json"


def check_available(names: Sequence[str]) -> None:
    """A one-line error for a tracker whose library is not installed (nothing imported)."""
    for name in names:
        if name not in BACKENDS:
            raise MinidmlError(f"--log-to {name!r}: choose from {', '.join(NAMES)}")
        _, _, libraries, extra = BACKENDS[name]
        missing = [lib for lib in libraries if importlib.util.find_spec(lib) is None]
        if missing:
            raise MinidmlError(f"--log-to {name}: {', '.join(missing)} is not installed; "
                               f"pip install 'minidml[{extra}]'")


def make_trackers(names: Sequence[str]) -> list[Tracker]:
    """One tracker per name (see :data:`NAMES`), each importing its library."""
    check_available(names)
    trackers = []
    for name in names:
        module, cls, _, _ = BACKENDS[name]
        trackers.append(getattr(importlib.import_module(f".{module}", __name__), cls)())
    return trackers


def scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a ``metrics.jsonl`` record as named series: ``{event}/{key}`` for a
    number, ``{event}/{key}/{i}`` for each item of a list of numbers; text is left out."""
    event = record.get("event", "record")
    out: dict[str, float] = {}
    for key, value in record.items():
        if key in ("event", "step"):
            continue
        if _number(value):
            out[f"{event}/{key}"] = float(value)
        elif isinstance(value, list) and value and all(_number(v) for v in value):
            out.update({f"{event}/{key}/{i}": float(v) for i, v in enumerate(value)})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def hyperparameters(config: Mapping[str, Any]) -> dict[str, str | int | float | bool]:
    """A run's settings as flat values (lists, tables and None written as JSON)."""
    return {k: v if isinstance(v, str | int | float | bool) else json.dumps(v)
            for k, v in sorted(config.items())}


def read_state(run_dir: Path) -> dict[str, Any]:
    try:
        state = json.loads((run_dir / STATE).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


class Tracker(Callback):
    """Sends a run's records, step by step, to one tracking library. A backend implements
    :meth:`open`, :meth:`send` and :meth:`close` (and :meth:`flush`, :meth:`summarize`
    where it differs)."""

    name = ""
    # whether a step is kept once :meth:`flush` returns; a tracker that is not counts a step
    # as sent only when it closes cleanly, and a resumed run re-sends the rest
    durable = True

    def __init__(self) -> None:
        self.run_dir: Path | None = None
        self._active = False
        self._sent = -1  # the last step the tracked run has for certain
        self._last = -1  # the last step sent
        self._identity: dict[str, Any] = {}
        self._pending: tuple[int, dict[str, float]] | None = None

    # ------------------------------------------------------------ what a backend does
    def open(self, run_dir: Path, identity: Mapping[str, Any], meta: Mapping[str, Any]
             ) -> dict[str, Any]:
        """Start the tracked run, or continue the one ``identity`` (what the last call
        returned; empty for a new run) names; ``meta`` is the run's ``config.json``."""
        raise NotImplementedError

    def send(self, step: int, values: Mapping[str, float]) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was sent durable before ``tracking.json`` says it was sent."""

    def summarize(self, step: int, values: Mapping[str, float]) -> None:
        """Final figures of the run (its scores), at its last step."""
        self.send(step, values)

    def close(self) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------ the callback
    def on_train_start(self, trainer: Trainer) -> None:
        if not trainer.comm.is_main:  # rank 0 tracks a distributed run
            return
        if trainer.run_dir is None:
            raise MinidmlError(f"--log-to {self.name}: needs a run directory (train with out=)")
        self.start(trainer.run_dir)

    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.record(record)

    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.record(record)

    def on_outer(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.record(record)

    def on_checkpoint(self, trainer: Trainer, path: Path) -> None:
        self._send_pending()

    def on_train_end(self, trainer: Trainer) -> None:
        self.finish()

    # ------------------------------------------------------------ the mechanics
    def start(self, run_dir: str | os.PathLike) -> None:
        """Open (or continue) the tracked run of ``run_dir``."""
        self.run_dir = Path(run_dir)
        saved = read_state(self.run_dir).get(self.name, {})
        meta = json.loads((self.run_dir / "config.json").read_text(encoding="utf-8"))
        self._identity = self.open(self.run_dir, saved.get("identity", {}), meta)
        # what the tracked run has: up to the step sent last, unless this is another one (a
        # new store, or the old run gone from it), which gets every step again
        same = saved.get("identity") == self._identity
        self._sent = self._last = int(saved.get("sent", -1)) if same else -1
        self._active = True
        self._save()
        # what the tracked run may lack from before a resumption: metrics.jsonl has it
        for record in read_metrics(self.run_dir / "metrics.jsonl"):
            self.record(record)

    def record(self, record: Mapping[str, Any]) -> None:
        """Take one ``metrics.jsonl`` record (steps arrive in order)."""
        if not self._active:
            return
        step = int(record["step"])
        if step <= self._sent:  # the tracked run has it from before a resumption
            return
        if self._pending is not None and self._pending[0] != step:
            self._send_pending()
        if self._pending is None:
            self._pending = (step, {})
        self._pending[1].update(scalars(record))

    def finish(self) -> None:
        if self._active:
            self._send_pending()
        if self._active:
            self._active = False
            try:
                self.close()
            except Exception as e:  # noqa: BLE001 - whatever the library raises
                self._failed("closing its run", e)
                return
            self._save(self._last)

    def _send_pending(self) -> None:
        if not self._active or self._pending is None:
            return
        step, values = self._pending
        self._pending = None
        try:
            if values:
                self.send(step, values)
            self.flush()
        except Exception as e:  # noqa: BLE001 - whatever the library raises
            self._failed(f"sending step {step}", e)
            return
        self._last = step
        if self.durable:
            self._sent = step
            self._save()

    def _failed(self, what: str, error: Exception) -> None:
        """The library failed mid-run: say so once and stop tracking, keeping as sent only
        the steps it had for certain (the training goes on; see the module's notes)."""
        self._pending = None
        if self._active:  # what tracking.json says stays as it was otherwise
            self._active = False
            with contextlib.suppress(Exception):  # it has failed already
                self.close()
            self._save()
        warnings.warn(f"--log-to {self.name}: {what} failed ({describe(error)}); it stops "
                      f"tracking and the run goes on (metrics.jsonl has every step; the "
                      f"tracked run gets those it lacks when the run is resumed, or from "
                      f"minidml.tracking.sync)", RuntimeWarning, stacklevel=2)

    def _save(self, sent: int | None = None) -> None:
        assert self.run_dir is not None
        if sent is not None:
            self._sent = max(self._sent, sent)
        state = read_state(self.run_dir)
        state[self.name] = {"identity": self._identity, "sent": self._sent}
        _io.write_json(self.run_dir / STATE, state)


def sync(run_dir: str | os.PathLike, scores: Mapping[str, float] | None = None) -> None:
    """Send the tracked runs of ``run_dir`` the steps of its ``metrics.jsonl`` that they
    lack, then any final ``scores`` (``{"blimp/student-0": 0.61, ...}``, under ``scores/``)
    at its last step; nothing when it was not tracked. A library that fails here warns and
    is left, like one that fails during training."""
    run_dir = Path(run_dir)
    names = [name for name in NAMES if name in read_state(run_dir)]
    for tracker in make_trackers(names):
        try:
            tracker.start(run_dir)
        except Exception as e:  # noqa: BLE001 - whatever the library raises
            tracker._failed("opening its run", e)
            continue
        tracker._send_pending()  # the last step first: the scores go at it
        if scores and tracker._active:
            try:
                tracker.summarize(max(tracker._last, 0), {f"scores/{k}": float(v)
                                                          for k, v in scores.items()})
            except Exception as e:  # noqa: BLE001 - whatever the library raises
                tracker._failed("sending the scores", e)
        tracker.finish()
