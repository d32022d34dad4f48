"""Training K students together: the loop, its observers, its metrics and its checkpoints.

The :class:`Trainer` takes one optimiser step of every student per :meth:`Trainer.train_step`,
evaluates, logs to ``metrics.jsonl`` and checkpoints (see :mod:`minidml.rundir` for the
files). Batches are a pure function of the seed and the step, so a resumed run on the CPU
reproduces an uninterrupted one bit for bit.

A :class:`Callback` sees each step, log record, evaluation, outer step and checkpoint;
trackers (:mod:`minidml.tracking`) are callbacks, built where the run is set up
(:func:`minidml.train`), and so is anything a caller passes. :class:`Checkpoints` is the part
of the trainer that saves and restores its state: the step, ω, every optimiser's state, the
RNG states, the offset of ``metrics.jsonl`` at the checkpoint, the planned steps and the
training time so far. Restoring all of it is what makes a resumed run on the CPU equal an
uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm

from . import _io
from .bilevel import adam_unroll, hypergradient, mirror_step
from .config import TrainConfig
from .data import Batches
from .decisions import Decisions, decide
from .distributed import Comm, local_comm
from .errors import MinidmlError, one_line
from .fused_linear import linear_mutual_loss, linear_target_log_probs
from .interrupts import HeldInterrupts
from .losses import MutualLoss, distillation_omega, mixture_log_probs
from .model import Student
from .rundir import (
    latest_checkpoint,
    newest_good_checkpoint,
    truncate_metrics,
    write_checkpoint,
)
from .runtime import resolve_device
from .schedule import Hybrid, lr_at, make_optimizer
from .timebudget import TimeBudget
from .tokenizer import Tokenizer
from .words import WordCount, milestones, revision_name


# ----------------------------------------------------------------------------- helpers
def out_of_memory(error: BaseException) -> bool:
    """Whether an error is an allocator's out-of-memory (CUDA's ``OutOfMemoryError``, the
    CPU's and MPS's ``RuntimeError``)."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text.lower())


# ----------------------------------------------------------------------------- observers
class Callback:
    """Observer of a :class:`~minidml.Trainer`; override what you need. Set
    ``trainer.should_stop`` to end training after the current step (a checkpoint is
    written)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, losses: MutualLoss) -> None: ...
    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_outer(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


# ----------------------------------------------------------------------------- checkpoints
class Checkpoints:
    """Checkpointing for :class:`~minidml.trainer.Trainer` (which has the attributes used
    here: ``students``, ``optimizers``, ``omega``, ``step``, ``comm``, ``run_dir``, ...)."""

    # the trainer's attributes that checkpointing reads (declarations only: set by Trainer)
    config: TrainConfig
    device: torch.device
    comm: Comm
    students: list[Student]
    optimizers: list[torch.optim.Optimizer | Hybrid]
    omega: torch.Tensor
    step: int
    skipped_steps: int
    run_dir: Path | None
    _writes: bool  # rank 0 of a run with a run_dir: run_dir is then not None
    callbacks: list[Callback]
    budget: TimeBudget | None
    words: WordCount | None
    milestones: dict[int, list[int]]
    _seconds: float
    _metrics_offset: int

    if TYPE_CHECKING:  # Trainer's
        @property
        def train_seconds(self) -> float: ...
        def _words(self) -> dict[str, int]: ...

    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, torch.Tensor | list[torch.Tensor]] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        metrics = cast(Path, self.run_dir) / "metrics.jsonl" if self._writes else None
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
        run_dir = self.run_dir
        if run_dir is None:
            return None
        state = self.state_dict()  # a collective in a distributed run
        words = ({**self._words(), "revisions": [revision_name(w) for w in
                                                 self.milestones.get(self.step, [])]}
                 if self.words is not None else None)
        final = self.comm.on_main(
            lambda: write_checkpoint(run_dir, self.step, self.students, state,
                                     self.config.keep_checkpoints, words), share=True)
        for cb in self.callbacks:
            cb.on_checkpoint(cast("Trainer", self), final)  # Checkpoints is Trainer's part
        return final

    @property
    def total_steps(self) -> int:
        """The steps the run plans (a time budget's plan changes as it goes)."""
        return self._total_steps

    @total_steps.setter
    def total_steps(self, steps: int) -> None:
        self._total_steps = steps
        # checkpoints at words seen, kept for good: the first step that reaches each count,
        # or the plan's last step, a fraction of a step short of it (WordCount.reach_step)
        self.milestones = (self.words.milestone_steps(milestones(self.config), steps)
                           if self.words is not None else {})

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
        if self.run_dir is None:
            raise MinidmlError("Trainer.resume: this trainer has no run directory to resume "
                               "from; give it run_dir=")
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
        run_dir = self.run_dir
        if run_dir is None:
            raise RuntimeError("Checkpoints._resume runs within resume(), given a run_dir")
        found = newest_good_checkpoint(run_dir, [s.config for s in self.students], device)
        if found is None:
            truncate_metrics(run_dir, 0)
            return None
        ckpt, students, state, errors = found
        for mine, theirs in zip(self.students, students, strict=True):
            mine.load_state_dict(theirs.state_dict())
        self.load_state_dict(state)
        truncate_metrics(run_dir, self._metrics_offset)  # records after the checkpoint
        if errors:
            print(f"warning: skipped damaged checkpoint(s): {'; '.join(errors)}",
                  file=sys.stderr)
        if self.comm.world_size == 1:
            return ckpt
        return ckpt, [s.state_dict() for s in students], state


# ----------------------------------------------------------------------------- trainer
class Trainer(Checkpoints):
    """Trains ``len(students)`` students on the same batches with the mutual-learning loss.

    ``comm`` (a placed :class:`~minidml.distributed.Comm`) makes this one rank of a
    distributed job: the rank trains only its own students (``comm.local``) and its share of
    each batch, and exchanges with the other ranks what the losses need. The other students'
    copies here are brought up to date at each checkpoint and at the end of :meth:`fit`.
    """

    def __init__(self, config: TrainConfig, students: list[Student], batches: Batches,
                 run_dir: str | os.PathLike | None = None, callbacks: Sequence[Callback] = (),
                 progress: bool = False, total_steps: int | None = None,
                 tokenizer: Tokenizer | None = None, teachers: Sequence[Student] = (),
                 comm: Comm | None = None, precision: Mapping[str, Any] | None = None,
                 compiled: Mapping[str, Any] | None = None,
                 decisions: Decisions | None = None, teacher_words: int = 0):
        """``decisions`` (:func:`minidml.decisions.decide`) are the device, precision,
        compilation and planned steps to train under; without them the trainer asks
        :func:`~minidml.decisions.decide` itself, with ``total_steps``, ``precision`` and
        ``compiled`` (records as ``config.json`` holds them) pinning what they name.
        ``teacher_words``: what a kd run's teachers read to train them (their runs' totals),
        counted in the run's total words (:mod:`minidml.words`)."""
        self.config = config
        self.tokenizer = tokenizer
        self.device = decisions.device if decisions is not None else resolve_device(
            config.device)
        self.comm = comm if comm is not None else local_comm(len(students))
        if self.comm.placement is None:
            self.comm.place([s.config.n_params for s in students], self.device,
                            peer_dtype=config.peer_dtype)
        self.words = WordCount.of(config, batches, teacher_words)
        if decisions is None:
            decisions = decide(config, [s.config for s in students], batches, self.comm,
                               precision=precision, compiled=compiled, total_steps=total_steps,
                               words=self.words)
        self.decisions = decisions
        for line in decisions.warnings:
            print(line, file=sys.stderr)
        self.students = [s.to(self.device) for s in students]
        self.precision_record = dict(decisions.precision)
        self.precision = self.precision_record["choice"]
        # kd: frozen teachers, in eval mode and without gradients
        self.teachers = [t.to(self.device).eval().requires_grad_(False) for t in teachers]
        if (config.mode == "kd") != bool(self.teachers):
            raise MinidmlError("--mode kd distils from teachers, and only kd does: give "
                               "teachers with mode kd, and none otherwise")
        self.batches = batches
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self._writes = self.run_dir is not None and self.comm.is_main  # rank 0 writes the run
        self.callbacks = list(callbacks)
        self.progress = progress
        self.budget = (TimeBudget(config.max_time, config.outer_every)
                       if config.max_time is not None else None)
        self.total_steps = decisions.total_steps  # and the checkpoints by words with it
        self.compile_record = dict(decisions.compiled)
        if progress and self.comm.is_main:  # the decisions, said once
            why = self.precision_record.get("reason")
            print(f"precision: {self.precision}" + (f" (auto: {why})" if why and
                  self.precision_record.get("requested") == "auto" else ""), file=sys.stderr)
            print(self.compile_record["line"], file=sys.stderr)
        # the training step's trunks: compiled callables, the modules themselves stay eager
        self._trunks = [torch.compile(s.trunk, dynamic=False) if self.compile_record["choice"]
                        else s.trunk for s in self.students]
        self.optimizers = [make_optimizer(s, config, self.precision) for s in self.students]
        k = len(students)
        self.omega = torch.full((k,), 1.0 / k, device=self.device)
        self.step = 0
        self.should_stop = False
        self.last_eval: dict[str, Any] | None = None
        self.skipped_steps = 0  # steps dropped for a non-finite loss (on_nonfinite = skip)
        self._seconds = 0.0  # wall time spent in fit() before the current call, resumes included
        self._fit_started: float | None = None
        self._metrics_offset = 0

    # ---------------------------------------------------------------- one step
    @property
    def _head_dtype(self) -> torch.dtype | None:
        """The dtype of the head's matmuls in the loss from hidden states: bf16 in a bf16 run
        (as autocast would run an unfused head), else the hidden states' own."""
        return torch.bfloat16 if self.precision == "bf16" else None

    def _autocast(self) -> contextlib.AbstractContextManager:
        return torch.autocast(self.device.type, dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def train_step(self) -> MutualLoss:
        """One optimiser step of every student (with gradient accumulation).

        In ``wml`` mode, every ``outer_every`` steps the peer weights ω take a mirror-descent
        step along the hypergradient, computed from this step's gradients before the optimiser
        uses them. No host synchronisation happens here.
        """
        cfg = self.config
        alpha = cfg.alpha_at(self.step)
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio,
                   cfg.schedule, cfg.decay_fraction)
        comm, mine = self.comm, [self.students[i] for i in self.comm.local]
        for s in mine:
            s.train()
        outer = self.learns_omega and (self.step + 1) % cfg.outer_every == 0
        parts, inputs, kept = [], [], []
        for micro in range(cfg.grad_accum):
            x, y = (comm.shard(t) for t in self.batches.train(self.step * cfg.grad_accum + micro))
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            losses, hidden, heads = self._loss(x, y.flatten(), alpha)
            (losses.total / cfg.grad_accum).backward()
            parts.append(losses)
            if outer:  # the hypergradient reuses this step's inputs and hidden states
                inputs.append(x)
                kept.append([h.detach() for h in hidden])
        losses = MutualLoss(*(torch.stack(t).mean(0) for t in zip(*parts, strict=True)))
        comm.average_gradients(mine)  # over data-parallel replicas, before anything reads them
        omega_before = self.omega
        if outer:
            self.outer_step(inputs, kept, [w.detach() for w in heads], lr, alpha)
        # the gradient norms (clipped to grad_clip, if set) double as the finiteness check
        norms = torch.stack([torch.nn.utils.clip_grad_norm_(
            model.parameters(), cfg.grad_clip if cfg.grad_clip > 0 else math.inf)
            for model in mine])
        if comm.world_size == 1:
            finite = torch.isfinite(norms) & torch.isfinite(losses.loss)
        else:  # the whole batch's losses, and flags that every rank agrees on
            stats, finite = comm.step_summary(torch.stack(losses[1:]), norms)
            losses = MutualLoss(stats[0].sum(), *stats)
        if not bool(finite.all()):  # the one host synchronisation of a step
            self._non_finite((~finite).nonzero().flatten().tolist(), omega_before)
            return losses
        for opt in (self.optimizers[i] for i in comm.local):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.step()
            opt.zero_grad(set_to_none=True)
        self.step += 1
        return losses

    def _loss(self, x: torch.Tensor, y: torch.Tensor, alpha: float
              ) -> tuple[MutualLoss, list[torch.Tensor], list[torch.Tensor]]:
        """This rank's students' losses on one micro-batch, from their final hidden states
        (:func:`~minidml.fused_linear.linear_mutual_loss`), and the hidden states and head
        weights that loss read. The loss's other members are fixed targets: in ``kd`` the
        teachers (run on the same batch without a graph, and the only members that weigh),
        else the students of other ranks, whose hidden states and heads arrive by
        :meth:`~minidml.distributed.Comm.gather_heads`. The result's vectors hold this
        rank's students at their places and zeros elsewhere."""
        comm, cfg = self.comm, self.config
        local = list(comm.local)
        with self._autocast():
            hidden = [self._trunks[i](x).flatten(0, 1) for i in local]
        heads = [self.students[i].embed.weight for i in local]
        at = list(range(len(local)))  # where this rank's students sit among the members
        if self.teachers:
            with torch.no_grad(), self._autocast():
                hidden += [t.trunk(x).flatten(0, 1) for t in self.teachers]
            heads += [t.embed.weight for t in self.teachers]
            omega = distillation_omega(len(local), len(self.teachers), self.device)
        elif comm.peers > 1 and alpha > 0:  # every student's, the others' detached
            hidden, heads = comm.gather_heads(hidden, heads,
                                              [s.config.d_model for s in self.students])
            omega, at = self.omega, local
        else:
            omega = self.omega if len(local) == len(self.students) else self.omega[local]
        full = linear_mutual_loss(hidden, heads, y, omega, alpha, cfg.softmax_temperature,
                                  head_dtype=self._head_dtype)
        if at == list(range(len(full.loss))) and len(at) == len(self.students):
            return full, hidden, heads
        mine = [t[at] for t in full[1:]]
        zero = full.loss.new_zeros(())
        losses = MutualLoss(mine[0].sum(), *(torch.stack(comm.scatter(list(t), zero))
                                             for t in mine))
        return losses, hidden, heads

    def _non_finite(self, bad: list[int], omega_before: torch.Tensor) -> None:
        """A step whose loss or gradient is NaN/inf: stop, or skip it (``on_nonfinite``).

        Stopping happens before any weight changes, so the weights in memory and every
        checkpoint stay finite. Skipping drops the step's gradients and any ω update and
        moves on to the next batch; ``metrics.jsonl`` records it.
        """
        step = self.step + 1
        for opt in (self.optimizers[i] for i in self.comm.local):
            opt.zero_grad(set_to_none=True)
        self.omega = omega_before
        who = ", ".join(str(i) for i in bad)
        if self.config.on_nonfinite == "stop":
            raise MinidmlError(f"step {step}: non-finite loss or gradient for student(s) "
                               f"{who}; lower --lr, or pass --on-nonfinite skip (checkpoints "
                               "written so far are intact)")
        self.skipped_steps += 1
        self.step = step
        self._emit({"event": "nonfinite", "step": step, "students": bad, "action": "skipped",
                    "skipped_steps": self.skipped_steps}, "on_log")

    @property
    def learns_omega(self) -> bool:
        return self.config.mode == "wml" and len(self.students) > 1 and self.config.kl_weight > 0

    def outer_step(self, inputs: list[torch.Tensor], kept: list[list[torch.Tensor]],
                   heads: list[torch.Tensor], lr: float, alpha: float) -> None:
        """Update ω from the hypergradient of the held-out ensemble loss (see bilevel.py);
        ``kept`` holds every student's detached hidden states on each input and ``heads``
        their head weights, as the step's inner loss read them; ``alpha`` is that loss's α."""
        cfg = self.config
        local = [self.students[i] for i in self.comm.local]
        # --unroll adam comes with AdamW only (TrainConfig.validate refuses it with Muon)
        unroll = (adam_unroll(local, cast("list[torch.optim.Optimizer]",
                                          [self.optimizers[i] for i in self.comm.local]),
                              lr, cfg.grad_clip) if cfg.unroll == "adam" else None)
        index = (self.step + 1) // cfg.outer_every - 1
        x_out, y_out = (self.comm.shard(t).to(self.device) for t in
                        self.batches.holdout(index, cfg.outer_batch_size))
        hyper = hypergradient(self.students, self.omega, inputs, x_out, y_out, lr=lr,
                              alpha=alpha, temperature=cfg.softmax_temperature,
                              variant=cfg.hypergrad, objective=cfg.outer_objective,
                              hidden=kept, heads=heads, comm=self.comm, unroll=unroll)
        beta = cfg.outer_lr
        if cfg.outer_lr_schedule == "cosine":
            beta *= lr / cfg.lr
        self.omega = mirror_step(self.omega, hyper.grad.to(self.omega.dtype), beta)
        self._emit({"event": "omega", "step": self.step + 1, "omega": self.omega.tolist(),
                    "hypergrad": hyper.grad.tolist(), "direct": hyper.direct.tolist(),
                    "outer_loss": float(hyper.outer_loss)}, "on_outer")

    # ---------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, max_tokens: int | None = None) -> dict[str, Any]:
        """Validation cross-entropy (nats/token) of each student and of the ω-ensemble."""
        comm, mine = self.comm, [self.students[i] for i in self.comm.local]
        for s in mine:
            s.eval()
        k = len(self.students)
        total = torch.zeros(k + 1, device=self.device, dtype=torch.float64)
        n = 0
        for b, (x, y) in enumerate(self.batches.validation(max_tokens or self.config.eval_tokens)):
            if not comm.takes(b):  # data-parallel replicas share the batches out
                continue
            x, y = x.to(self.device), y.to(self.device).flatten()
            with self._autocast():  # log p_i(y) from hidden states, in chunks: no N×V logits
                log_p = torch.stack([linear_target_log_probs(
                    s.trunk(x).flatten(0, 1), s.embed.weight, y) for s in mine])
            per = [-lp.sum() for lp in log_p]
            if comm.peers > 1:
                log_p = torch.stack(comm.gather_students(list(log_p)))
            ens = -mixture_log_probs(log_p, self.omega).sum()
            total += torch.stack([*comm.scatter(per, per[0].new_zeros(())), ens]).double()
            n += y.numel()
        if comm.world_size > 1:  # every rank gets the same numbers
            per_student, rest = comm.sum_counts(total[:k], torch.stack(
                [total[k], torch.tensor(n, dtype=torch.float64, device=self.device)]))
            total, n = torch.cat([per_student, rest[:1]]), int(rest[1].item())
        losses = (total / n).tolist()
        return {"event": "eval", "step": self.step, **self._words(), "val_loss": losses[:k],
                "val_ppl": [math.exp(min(v, 700.0)) for v in losses[:k]],
                "ensemble_val_loss": losses[k],
                "val_tokens": n}

    # ---------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train until ``total_steps`` (or until a callback sets ``should_stop``).

        Evaluates every ``eval_every`` steps and at the end, checkpoints every ``save_every``
        steps and at the end. Ctrl-C (and SIGTERM, where a handler turns it into an
        interrupt) waits for the step in hand to end, then writes a checkpoint of it before it
        propagates (:mod:`minidml.interrupts`); a second one stops at once, the last
        checkpoint standing.
        """
        if self.step >= self.total_steps:  # a resumed run that had already finished
            return
        for cb in self.callbacks:
            cb.on_train_start(self)
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="training",
                   disable=not self.progress, dynamic_ncols=True)
        self._fit_started = time.perf_counter()
        self._saved_at = -1
        if self.budget is not None:
            self.budget.start(self.step)
        # an interrupt waits for the step in hand to end, so that a checkpoint holds whole
        # steps (several ranks cannot agree on one once interrupted: theirs are not held,
        # and the last checkpoint stands)
        held = HeldInterrupts(enabled=self.comm.world_size == 1)
        try:
            with held:
                self._steps(bar, held)
        except KeyboardInterrupt:
            if self.step != self._saved_at and self.comm.world_size == 1 and not held.torn:
                self.save_checkpoint()
            raise
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            raise MinidmlError(self._out_of_memory_line(e)) from None
        finally:
            bar.close()
        if self.step != self._saved_at:
            self.save_checkpoint()
        self._seconds, self._fit_started = self.train_seconds, None
        for cb in self.callbacks:
            cb.on_train_end(self)

    def _steps(self, bar: tqdm, held: HeldInterrupts) -> None:
        """:meth:`fit`'s steps, each with its log, evaluation and checkpoint when due; an
        interrupt held during a step is handed on after it (and after the last)."""
        cfg = self.config
        t0, tokens0 = self._fit_started, self.step * cfg.tokens_per_step
        if t0 is None:
            raise RuntimeError("Trainer._steps runs within fit(), which starts the clock")
        while self.step < self.total_steps and not self._stopping():
            losses = self.train_step()
            for cb in self.callbacks:
                cb.on_step_end(self, losses)
            if self.budget is not None and self.comm.any(
                    self.budget.out_of_time(self.train_seconds)):  # rank 0's clock, too
                self.total_steps = self.step  # the last step: evaluate and save now
            if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                rec = self._log_record(losses, time.perf_counter() - t0, tokens0)
                self._emit(rec, "on_log")
                bar.set_postfix_str(" ".join(f"{v:.3f}" for v in rec["loss"])
                                    + f" | {rec['tokens_per_s']:.0f} tok/s")
            evaluated = self.step % cfg.eval_every == 0 or self.step == self.total_steps
            if evaluated:
                self.last_eval = self.evaluate()
                self._emit(self.last_eval, "on_eval")
            if self.budget is not None and self.step < self.total_steps:
                self._plan(bar, evaluated)
            if self.step % cfg.save_every == 0 or self.step in self.milestones:
                self.save_checkpoint()
                self._saved_at = self.step
            bar.update(1)
            held.check()

    def _plan(self, bar: tqdm, evaluated: bool) -> None:
        """Re-plan a time-budgeted run's steps when its budget says so (rank 0's plan, which
        every rank follows)."""
        budget = self.budget
        if budget is None:
            raise RuntimeError("Trainer._plan runs only in a time-budgeted run")

        def plan() -> dict[str, Any] | None:
            steps = budget.after_step(self.step, self.train_seconds, evaluated)
            if steps is None:
                return None
            return {"event": "plan", "step": self.step, "total_steps": steps,
                    "seconds_per_step": round(budget.seconds_per_step, 4),
                    "max_time": budget.seconds,
                    "train_seconds": round(self.train_seconds, 3)}

        record = self.comm.on_main(plan, share=True)
        if record is None:
            return
        if self.decisions.max_steps is not None:  # never past what the track allows
            record["total_steps"] = min(record["total_steps"], self.decisions.max_steps)
        self.total_steps = record["total_steps"]
        bar.total = self.total_steps
        bar.refresh()
        self._emit(record, "on_log")
        if self._writes:  # so there is a run_dir
            config_json = cast(Path, self.run_dir) / "config.json"
            if config_json.exists():
                meta = json.loads(config_json.read_text(encoding="utf-8"))
                _io.write_json(config_json, {**meta, "plan": record})

    def _out_of_memory_line(self, error: RuntimeError) -> str:
        cfg = self.config
        detail = one_line(error) or "out of memory"
        detail = one_line(detail.split("DefaultCPUAllocator: ")[-1], 120)
        ckpt = latest_checkpoint(self.run_dir) if self.run_dir is not None else None
        where = (f"the last good checkpoint is {ckpt}" if ckpt is not None
                 else "no checkpoint was written yet")
        return (f"step {self.step + 1}: out of memory on {self.device} ({detail}); lower "
                f"--batch-size (now {cfg.batch_size}) and raise --grad-accum (now "
                f"{cfg.grad_accum}) to keep {cfg.tokens_per_step:,} tokens per step, or use "
                f"fewer or smaller students; {where}")

    @property
    def train_seconds(self) -> float:
        """Wall time spent training this run, over every resumption (up to the checkpoint
        each one started from)."""
        running = time.perf_counter() - self._fit_started if self._fit_started else 0.0
        return self._seconds + running

    def _log_record(self, losses: MutualLoss, elapsed: float, tokens0: int) -> dict[str, Any]:
        cfg = self.config
        tokens = self.step * cfg.tokens_per_step
        return {"event": "train", "step": self.step, "tokens": tokens, **self._words(),
                "epoch": round(tokens / max(1, self.batches.epoch_tokens), 4),
                "lr": lr_at(self.step - 1, cfg.lr, cfg.warmup_steps, self.total_steps,
                            cfg.min_lr_ratio, cfg.schedule, cfg.decay_fraction),
                "loss": losses.loss.tolist(),
                "ce": losses.ce.tolist(), "kl": losses.kl.tolist(),
                "omega": self.omega.tolist(), "skipped_steps": self.skipped_steps,
                "tokens_per_s": (tokens - tokens0) / max(elapsed, 1e-9),
                "train_seconds": round(self.train_seconds, 3),
                "time": _io.utc_now()}

    def _words(self) -> dict[str, int]:
        """Words seen by each model and by the run in all, at this step (when known)."""
        if self.words is None:
            return {}
        return {"words": self.words.per_model(self.step),
                "words_total": self.words.total(self.step)}

    def _stopping(self) -> bool:
        """``should_stop``, set by a callback on any rank, stops every rank."""
        self.should_stop = self.comm.any(self.should_stop)
        return self.should_stop

    def _emit(self, record: dict[str, Any], hook: str) -> None:
        if self._writes:  # so there is a run_dir
            with open(cast(Path, self.run_dir) / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        for cb in self.callbacks:
            getattr(cb, hook)(self, record)
