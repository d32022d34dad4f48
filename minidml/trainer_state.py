"""A trainer's state: what a checkpoint holds, writing one, and resuming from one.

:class:`Checkpoints` is the part of :class:`~minidml.trainer.Trainer` that saves and
restores it: the step, ω, every optimiser's state, the RNG states, the offset of
``metrics.jsonl`` at the checkpoint, the planned steps and the training time so far (the
files themselves: :mod:`minidml.rundir`). Restoring all of it is what makes a resumed run
on the CPU equal an uninterrupted one bit for bit.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from .rundir import newest_good_checkpoint, truncate_metrics, write_checkpoint


class Checkpoints:
    """Checkpointing for :class:`~minidml.trainer.Trainer` (which has the attributes used
    here: ``students``, ``optimizers``, ``omega``, ``step``, ``comm``, ``run_dir``, ...)."""

    def state_dict(self) -> dict[str, Any]:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        metrics = self.run_dir / "metrics.jsonl" if self._writes else None
        # each student's optimiser state from its owner (complete on rank 0)
        optimizers = self.comm.gather_states([o.state_dict() for o in self.optimizers])
        return {"step": self.step, "omega": self.omega.detach().cpu(),
                "optimizers": optimizers, "rng": rng,
                "metrics_bytes": metrics.stat().st_size if metrics and metrics.exists() else 0,
                "total_steps": self.total_steps, "skipped_steps": self.skipped_steps,
                "train_seconds": self.train_seconds}

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` (see :func:`~minidml.rundir.write_checkpoint`).

        In a distributed run every rank first receives every student's weights from its
        owner, and rank 0 writes the checkpoint (with every optimiser's state)."""
        self.comm.sync_students(self.students)
        if self.run_dir is None:
            return None
        state = self.state_dict()  # a collective in a distributed run
        final = self.comm.on_main(
            lambda: write_checkpoint(self.run_dir, self.step, self.students, state,
                                     self.config.keep_checkpoints), share=True)
        for cb in self.callbacks:
            cb.on_checkpoint(self, final)
        return final

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        if self.budget is not None:  # the plan it had made (steps, tokens and epochs: fixed)
            self.total_steps = int(state.get("total_steps", self.total_steps))
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self._seconds = float(state.get("train_seconds", 0.0))
        self.omega = state["omega"].to(self.device, torch.float32)
        for opt, sd in zip(self.optimizers, state["optimizers"], strict=True):
            opt.load_state_dict(sd)
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])
        self._metrics_offset = int(state.get("metrics_bytes", 0))

    def resume(self) -> Path | None:
        """Load the newest good checkpoint (falling back to an older one if it is damaged).

        A run stopped before its first checkpoint starts again from step 0, which is exactly
        where it started (the initialisation follows from the seed): ``None`` is returned.
        Leftovers of a checkpoint whose writing was interrupted are removed. In a distributed
        run rank 0 reads the checkpoint and sends it to the others, whatever the world size
        that wrote it (checkpoints do not depend on it).
        """
        assert self.run_dir is not None
        if self.comm.world_size == 1:
            return self._resume(self.device)
        found = self.comm.on_main(lambda: self._resume(torch.device("cpu")), share=True)
        if found is not None:
            ckpt, weights, state = found
            for model, sd in zip(self.students, weights, strict=True):
                model.load_state_dict(sd)
            self.load_state_dict(state)
        return found[0] if found is not None else None

    def _resume(self, device: torch.device) -> Any:
        """:meth:`resume` in one process; on rank 0 of a distributed run it returns
        (checkpoint, weights, state), to send to the others, instead of the path."""
        found = newest_good_checkpoint(self.run_dir, [s.config for s in self.students], device)
        if found is None:
            truncate_metrics(self.run_dir, 0)
            return None
        ckpt, students, state, errors = found
        for mine, theirs in zip(self.students, students, strict=True):
            mine.load_state_dict(theirs.state_dict())
        self.load_state_dict(state)
        truncate_metrics(self.run_dir, self._metrics_offset)  # records after the checkpoint
        if errors:
            print(f"warning: skipped damaged checkpoint(s): {'; '.join(errors)}",
                  file=sys.stderr)
        if self.comm.world_size == 1:
            return ckpt
        return ckpt, [s.state_dict() for s in students], state
