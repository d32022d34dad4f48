"""Training K students together: the loop, schedules, checkpoints, resumption and metrics.

A run directory holds everything needed to reload or continue a run::

    config.json          settings, student shapes, tokenizer and corpus fingerprints, versions
    tokenizer.model      the shared sentencepiece model
    metrics.jsonl        one JSON record per log interval and per evaluation
    checkpoints/step-00000500/
        student-0.pt ... weights, one file per student (loadable with weights_only=True)
        state.pt         optimisers, ω, step, RNG states, metrics offset

A checkpoint directory is written under a temporary name and renamed when complete, so a
crash never leaves a half-written checkpoint; the two most recent are kept, and loading falls
back to the older one if the newer is damaged. Batches are a pure function of the seed and the
step, so a resumed run on the CPU reproduces an uninterrupted one bit for bit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from . import __version__, _io
from .bilevel import hypergradient, mirror_step
from .compiling import decide as decide_compile
from .config import TrainConfig
from .data import Batches, corpus_files, fingerprint, read_lines, tokenize_corpus
from .distributed import Comm, local_comm, session
from .errors import MinidmlError
from .fused_linear import linear_mutual_loss, linear_target_log_probs
from .losses import (
    MutualLoss,
    distillation_loss,
    mixture_log_probs,
    mutual_loss,
    teacher_logits,
)
from .model import Student, StudentConfig
from .precision import choose as choose_precision
from .tokenizer import Tokenizer

CHECKPOINTS_KEPT = 2


# ----------------------------------------------------------------------------- helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, then Apple's MPS, else the CPU. Under ``torchrun`` every
    CUDA device means the rank's own GPU, ``cuda:LOCAL_RANK``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MinidmlError(f"--device {name}: CUDA is not available here; use --device cpu")
    if name.startswith("cuda") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # a GPU per rank
    return torch.device(name)


def lr_at(step: int, base_lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to ``base_lr``, then cosine decay to ``min_ratio · base_lr`` at ``total``."""
    if step < warmup:
        return base_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base_lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norms' 1-D gains)."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))


class Callback:
    """Observer of a :class:`Trainer`; override what you need. Set ``trainer.should_stop``
    to end training after the current step (a checkpoint is written)."""

    def on_train_start(self, trainer: Trainer) -> None: ...
    def on_step_end(self, trainer: Trainer, losses: MutualLoss) -> None: ...
    def on_log(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_eval(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_outer(self, trainer: Trainer, record: dict[str, Any]) -> None: ...
    def on_checkpoint(self, trainer: Trainer, path: Path) -> None: ...
    def on_train_end(self, trainer: Trainer) -> None: ...


# ----------------------------------------------------------------------------- the run
@dataclass
class Run:
    """A trained (or training) run, as :func:`load` gives it back."""

    path: Path
    config: TrainConfig
    tokenizer: Tokenizer
    students: list[Student]
    omega: torch.Tensor
    step: int
    last_eval: dict[str, Any] | None = None  # the latest validation record, if any

    @property
    def device(self) -> torch.device:
        return self.students[0].embed.weight.device

    @property
    def champion(self) -> int:
        """The student with the lowest validation loss at the latest evaluation (student 0 when
        the run was never evaluated): chosen on held-out text, never on a test suite."""
        losses = (self.last_eval or {}).get("val_loss")
        if not losses:
            return 0
        return min(range(len(losses)), key=lambda i: (
            losses[i] if math.isfinite(losses[i]) else math.inf, i))

    def generate(self, prompt: str = "", student: int = 0, max_new_tokens: int = 50,
                 temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> str:
        """Sample a continuation of ``prompt`` from one student (after a BOS token)."""
        ids = torch.tensor([[Tokenizer.bos_id, *self.tokenizer.encode(prompt)]],
                           device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        model = self.students[student].eval()
        out = model.generate(ids, max_new_tokens, temperature, top_k,
                             eos_id=Tokenizer.eos_id, generator=gen)
        return prompt + self.tokenizer.decode(out[0, ids.shape[1]:].tolist())


def load(run_dir: str | os.PathLike, device: str = "cpu") -> Run:
    """Students, tokenizer, ω and settings of a run directory (its latest good checkpoint)."""
    path = Path(run_dir)
    meta = read_run_config(path)
    tokenizer = Tokenizer.load(path / "tokenizer.model")
    cfg = TrainConfig.from_dict(meta["config"], f"{path / 'config.json'}")
    _check_tokenizer(path, meta, tokenizer)
    scfgs = student_configs(cfg, tokenizer.vocab_size)
    ckpt = latest_checkpoint(path)
    if ckpt is None:
        raise MinidmlError(f"{path}: no complete checkpoint yet; train longer or resume it")
    dev = resolve_device(device)
    students, state = _load_checkpoint(ckpt, scfgs, dev)
    step = int(state["step"])
    return Run(path, cfg, tokenizer, students, state["omega"].to(dev), step,
               last_eval=_last_eval(path / "metrics.jsonl", step))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                with contextlib.suppress(json.JSONDecodeError):
                    rec = json.loads(line)
                    if isinstance(rec, dict):
                        records.append(rec)
    except FileNotFoundError:
        pass
    return records


def _last_eval(path: Path, step: int) -> dict[str, Any] | None:
    """The latest validation record at or before ``step``."""
    evals = [r for r in read_metrics(path)
             if r.get("event") == "eval" and isinstance(r.get("step"), int) and r["step"] <= step
             and isinstance(r.get("val_loss"), list)]
    return evals[-1] if evals else None


def _check_tokenizer(path: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """The run's tokenizer.model must be the one its config.json recorded."""
    want = meta.get("tokenizer", {})
    if want.get("vocab_size") not in (None, tokenizer.vocab_size) or \
            want.get("sha256") not in (None, tokenizer.sha256):
        raise MinidmlError(f"{path / 'tokenizer.model'}: not the tokenizer this run was "
                           f"trained with (vocabulary {tokenizer.vocab_size}, config.json "
                           f"says {want.get('vocab_size')}); restore the run's own file")


def read_run_config(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinidmlError(f"{path}: not a minidml run (no config.json); give a run "
                           "directory written by minidml train") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinidmlError(f"{path / 'config.json'}: unreadable ({e}); the run is damaged") \
            from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise MinidmlError(f"{path / 'config.json'}: missing its 'config' table")
    return meta


def student_configs(cfg: TrainConfig, vocab_size: int) -> list[StudentConfig]:
    return [StudentConfig.from_shape(s, vocab_size, cfg.context) for s in cfg.students]


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


def _load_checkpoint(ckpt: Path, scfgs: list[StudentConfig], device: torch.device
                     ) -> tuple[list[Student], dict[str, Any]]:
    """Students and training state of one checkpoint; weights-only unpickling throughout."""
    def read(name: str) -> Any:
        try:
            return torch.load(ckpt / name, map_location=device, weights_only=True)
        except FileNotFoundError:
            raise MinidmlError(f"{ckpt / name}: missing; the checkpoint is incomplete") from None
        except Exception as e:  # noqa: BLE001 - unpickling errors have many types
            raise MinidmlError(f"{ckpt / name}: refused or damaged ({type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160]})") from None

    students = []
    for i, scfg in enumerate(scfgs):
        model = Student(scfg).to(device)
        try:
            model.load_state_dict(read(f"student-{i}.pt"))
        except (RuntimeError, TypeError, AttributeError) as e:
            raise MinidmlError(f"{ckpt / f'student-{i}.pt'}: does not match the config "
                               f"({str(e).splitlines()[0][:160]})") from None
        students.append(model.eval())
    return students, read("state.pt")


# ----------------------------------------------------------------------------- trainer
class Trainer:
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
                 compiled: Mapping[str, Any] | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.device = resolve_device(config.device)
        self.comm = comm if comm is not None else local_comm(len(students))
        if self.comm.placement is None:
            self.comm.place([s.config.n_params for s in students], self.device,
                            peer_dtype=config.peer_dtype)
        self.students = [s.to(self.device) for s in students]
        self.precision_record = dict(precision) if precision is not None else self.comm.on_main(
            lambda: self._choose_precision(), share=True)
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
        self.total_steps = total_steps or steps_for(config, batches)
        self.compile_record = dict(compiled) if compiled is not None else self._choose_compile()
        if progress and self.comm.is_main:
            print(self.compile_record["line"], file=sys.stderr)
        # the training step's trunks: compiled callables, the modules themselves stay eager
        self._trunks = [torch.compile(s.trunk, dynamic=False) if self.compile_record["choice"]
                        else s.trunk for s in self.students]
        self.optimizers = [make_optimizer(s, config) for s in self.students]
        k = len(students)
        self.omega = torch.full((k,), 1.0 / k, device=self.device)
        self.step = 0
        self.should_stop = False
        self.last_eval: dict[str, Any] | None = None
        self.skipped_steps = 0  # steps dropped for a non-finite loss (on_nonfinite = skip)
        self._seconds = 0.0  # wall time spent in fit() before the current call, resumes included
        self._fit_started: float | None = None
        self._metrics_offset = 0

    def _choose_precision(self) -> dict[str, Any]:
        """The precision this run trains in, measured here (see :mod:`minidml.precision`)."""
        _, record, warning = choose_precision(
            self.config.precision, self.device, [s.config.d_model for s in self.students],
            self.students[0].config.vocab_size)
        if warning:
            print(warning, file=sys.stderr)
        return record

    def _choose_compile(self) -> dict[str, Any]:
        """Whether the training step runs compiled trunks (see :mod:`minidml.compiling`)."""
        cfg = self.config
        tokens = cfg.batch_size * cfg.context * cfg.grad_accum * self.total_steps
        flops = sum(s.config.flops_per_token(cfg.context) for s in self.students) * tokens
        choice, line = decide_compile(cfg.compile, self.device, flops, self.precision_record)
        return {"requested": cfg.compile, "choice": choice, "line": line}

    # ---------------------------------------------------------------- one step
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
        alpha = 0.0 if cfg.mode == "single" else cfg.alpha
        lr = lr_at(self.step, cfg.lr, cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio)
        comm, mine = self.comm, [self.students[i] for i in self.comm.local]
        for s in mine:
            s.train()
        outer = self.learns_omega and (self.step + 1) % cfg.outer_every == 0
        parts, inputs, kept = [], [], []
        for micro in range(cfg.grad_accum):
            x, y = (comm.shard(t) for t in self.batches.train(self.step * cfg.grad_accum + micro))
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            if self.loss_from_hidden:
                with self._autocast():
                    hidden = [self._trunks[i](x).flatten(0, 1) for i in comm.local]
                losses = linear_mutual_loss(hidden, [s.embed.weight for s in mine], y.flatten(),
                                            self.omega, alpha, cfg.softmax_temperature)
            else:
                with self._autocast():
                    logits = [s.head(self._trunks[i](x)).flatten(0, 1)
                              for i, s in zip(comm.local, mine, strict=True)]
                if not self.teachers and alpha > 0:  # the peers' logits, detached
                    logits = comm.gather_students(logits, comm.peer_dtype)
                losses = self._loss(x, logits, y.flatten(), alpha)
            (losses.total / cfg.grad_accum).backward()
            parts.append(losses)
            if outer:  # the hypergradient reuses this step's inputs and logits
                inputs.append(x)
                if self.loss_from_hidden:
                    with torch.no_grad():
                        logits = [s.head(h.detach()) for s, h in zip(mine, hidden, strict=True)]
                kept.append([z.detach() for z in logits])
        losses = MutualLoss(*(torch.stack(t).mean(0) for t in zip(*parts, strict=True)))
        comm.average_gradients(mine)  # over data-parallel replicas, before anything reads them
        omega_before = self.omega
        if outer:
            self.outer_step(inputs, kept, lr)
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

    def _loss(self, x: torch.Tensor, logits: list[torch.Tensor], y: torch.Tensor,
              alpha: float) -> MutualLoss:
        """The students' losses on one micro-batch: mutual, or distilled from the teachers,
        whose forward pass runs on the same batch without a graph."""
        temperature = self.config.softmax_temperature
        if not self.teachers:
            losses = mutual_loss(logits, y, self.omega, alpha, temperature)
        else:
            with torch.no_grad(), self._autocast():
                teacher = teacher_logits([t(x).flatten(0, 1) for t in self.teachers],
                                         temperature)
            losses = distillation_loss(logits, teacher, y, alpha, temperature)
        if len(losses.loss) == len(self.students):
            return losses
        # this rank's students only (no peers needed): zeros in the others' places
        zero = losses.loss.new_zeros(())
        return MutualLoss(losses.total, *(torch.stack(self.comm.scatter(list(t), zero))
                                          for t in losses[1:]))

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
    def loss_from_hidden(self) -> bool:
        """Whether the step takes its loss from hidden states (:mod:`minidml.fused_linear`):
        the default, in one process without teachers."""
        return (self.config.head_loss == "hidden" and self.comm.world_size == 1
                and not self.teachers)

    @property
    def learns_omega(self) -> bool:
        return self.config.mode == "wml" and len(self.students) > 1 and self.config.alpha > 0

    def outer_step(self, inputs: list[torch.Tensor], logits: list[list[torch.Tensor]],
                   lr: float) -> None:
        """Update ω from the hypergradient of the held-out ensemble loss (see bilevel.py)."""
        cfg = self.config
        index = (self.step + 1) // cfg.outer_every - 1
        x_out, y_out = (self.comm.shard(t).to(self.device) for t in
                        self.batches.holdout(index, cfg.outer_batch_size))
        hyper = hypergradient(self.students, self.omega, inputs, x_out, y_out, lr=lr,
                              alpha=cfg.alpha, temperature=cfg.softmax_temperature,
                              variant=cfg.hypergrad, objective=cfg.outer_objective,
                              logits=logits, comm=self.comm)
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
        return {"event": "eval", "step": self.step, "val_loss": losses[:k],
                "val_ppl": [math.exp(min(v, 700.0)) for v in losses[:k]],
                "ensemble_val_loss": losses[k],
                "val_tokens": n}

    # ---------------------------------------------------------------- the loop
    def fit(self) -> None:
        """Train until ``total_steps`` (or until a callback sets ``should_stop``).

        Evaluates every ``eval_every`` steps and at the end, checkpoints every ``save_every``
        steps and at the end; Ctrl-C writes a checkpoint before it propagates.
        """
        cfg = self.config
        if self.step >= self.total_steps:  # a resumed run that had already finished
            return
        for cb in self.callbacks:
            cb.on_train_start(self)
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", desc="training",
                   disable=not self.progress, dynamic_ncols=True)
        t0, tokens0, saved_at = time.perf_counter(), self.step * cfg.tokens_per_step, -1
        self._fit_started = t0
        try:
            while self.step < self.total_steps and not self._stopping():
                losses = self.train_step()
                for cb in self.callbacks:
                    cb.on_step_end(self, losses)
                if self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - t0
                    rec = self._log_record(losses, elapsed, tokens0)
                    self._emit(rec, "on_log")
                    bar.set_postfix_str(" ".join(f"{v:.3f}" for v in rec["loss"])
                                        + f" | {rec['tokens_per_s']:.0f} tok/s")
                if self.step % cfg.eval_every == 0 or self.step == self.total_steps:
                    self.last_eval = self.evaluate()
                    self._emit(self.last_eval, "on_eval")
                if self.step % cfg.save_every == 0:
                    self.save_checkpoint()
                    saved_at = self.step
                bar.update(1)
        except KeyboardInterrupt:
            # several ranks cannot agree on a checkpoint once interrupted: the last one stands
            if self.step != saved_at and self.comm.world_size == 1:
                self.save_checkpoint()
            raise
        finally:
            bar.close()
        if self.step != saved_at:
            self.save_checkpoint()
        self._seconds, self._fit_started = self.train_seconds, None
        for cb in self.callbacks:
            cb.on_train_end(self)

    @property
    def train_seconds(self) -> float:
        """Wall time spent training this run, over every resumption (up to the checkpoint
        each one started from)."""
        running = time.perf_counter() - self._fit_started if self._fit_started else 0.0
        return self._seconds + running

    def _log_record(self, losses: MutualLoss, elapsed: float, tokens0: int) -> dict[str, Any]:
        cfg = self.config
        tokens = self.step * cfg.tokens_per_step
        return {"event": "train", "step": self.step, "tokens": tokens,
                "lr": lr_at(self.step - 1, cfg.lr, cfg.warmup_steps, self.total_steps,
                            cfg.min_lr_ratio),
                "loss": losses.loss.tolist(),
                "ce": losses.ce.tolist(), "kl": losses.kl.tolist(),
                "omega": self.omega.tolist(), "skipped_steps": self.skipped_steps,
                "tokens_per_s": (tokens - tokens0) / max(elapsed, 1e-9),
                "train_seconds": round(self.train_seconds, 3),
                "time": _io.utc_now()}

    def _stopping(self) -> bool:
        """``should_stop``, set by a callback on any rank, stops every rank."""
        self.should_stop = self.comm.any(self.should_stop)
        return self.should_stop

    def _emit(self, record: dict[str, Any], hook: str) -> None:
        if self._writes:
            with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        for cb in self.callbacks:
            getattr(cb, hook)(self, record)

    # ---------------------------------------------------------------- checkpoints
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
        """Write ``checkpoints/step-N`` atomically and keep the newest ``CHECKPOINTS_KEPT``.

        In a distributed run every rank first receives every student's weights from its
        owner, and rank 0 writes the checkpoint (with every optimiser's state)."""
        self.comm.sync_students(self.students)
        if self.run_dir is None:
            return None
        root = self.run_dir / "checkpoints"
        final = root / f"step-{self.step:08d}"
        state = self.state_dict() if self.comm.world_size > 1 else None  # a collective

        def write() -> None:
            tmp = root / f".tmp-{final.name}-{os.getpid()}"
            try:
                root.mkdir(exist_ok=True)
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                for i, s in enumerate(self.students):
                    with _io.atomic_open(tmp / f"student-{i}.pt") as f:
                        torch.save(s.state_dict(), f)
                with _io.atomic_open(tmp / "state.pt") as f:
                    torch.save(state if state is not None else self.state_dict(), f)
                if final.exists():
                    shutil.rmtree(final)
                os.replace(tmp, final)
                _io.fsync_dir(root)
            except OSError as e:
                shutil.rmtree(tmp, ignore_errors=True)
                raise MinidmlError(f"{root}: cannot write checkpoint ({e.strerror or e}); free "
                                   "space or choose another --out; the previous checkpoint is "
                                   "intact") from None
            for old in checkpoints(self.run_dir)[:-CHECKPOINTS_KEPT]:
                shutil.rmtree(old, ignore_errors=True)

        self.comm.on_main(write)
        for cb in self.callbacks:
            cb.on_checkpoint(self, final)
        return final

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
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
        for stale in (self.run_dir / "checkpoints").glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        metrics = self.run_dir / "metrics.jsonl"
        if not checkpoints(self.run_dir):
            if metrics.exists():
                with open(metrics, "r+b") as f:
                    f.truncate(0)
            return None
        scfgs = [s.config for s in self.students]
        errors = []
        for ckpt in reversed(checkpoints(self.run_dir)):
            try:
                students, state = _load_checkpoint(ckpt, scfgs, device)
            except MinidmlError as e:
                errors.append(str(e))
                continue
            for mine, theirs in zip(self.students, students, strict=True):
                mine.load_state_dict(theirs.state_dict())
            self.load_state_dict(state)
            if metrics.exists():  # drop records written after this checkpoint
                with open(metrics, "r+b") as f:
                    f.truncate(self._metrics_offset)
            if errors:
                print(f"warning: skipped damaged checkpoint(s): {'; '.join(errors)}",
                      file=sys.stderr)
            if self.comm.world_size == 1:
                return ckpt
            return ckpt, [s.state_dict() for s in students], state
        raise MinidmlError(f"{self.run_dir}: no usable checkpoint to resume from"
                           + (f" ({errors[0]})" if errors else "; start a new run"))


def steps_for(cfg: TrainConfig, batches: Batches) -> int:
    """Total optimiser steps: ``steps``, else ``tokens`` / tokens per step, else one epoch."""
    if cfg.steps is not None:
        return cfg.steps
    tokens = cfg.tokens if cfg.tokens is not None else batches.n_train_tokens
    return max(1, tokens // cfg.tokens_per_step)


# ----------------------------------------------------------------------------- top level
def default_run_dir(corpus: Sequence[str | os.PathLike], root: str | os.PathLike = "runs"
                    ) -> Path:
    stem = Path(corpus[0]).name.split(".")[0] or "corpus"
    return Path(root) / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The most recently modified run directory under ``root``, if any."""
    root = Path(root)
    runs = [p for p in root.glob("*/config.json")] if root.is_dir() else []
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def _stopped_before_start(out: Path) -> bool:
    """A run directory that a killed ``train`` left before writing its ``config.json``:
    at most a tokenizer and temporary files."""
    return (out.is_dir() and not (out / "config.json").exists()
            and all(p.name == "tokenizer.model" or p.name.startswith(".")
                    for p in out.iterdir()))


def _prepare_run_dir(out: Path, resume: bool, force: bool,
                     keep: Sequence[str | os.PathLike] = ()) -> None:
    if resume:
        if not (out / "config.json").exists():
            raise MinidmlError(f"--resume: {out} holds no run to resume; drop --resume to "
                               "start one")
        return
    new_out_dir(out, force, keep)


def new_out_dir(out: Path, force: bool, keep: Sequence[str | os.PathLike] = ()) -> None:
    """An empty, writable directory at ``--out``: one that exists and holds something is
    refused, unless ``force`` empties it; never one that holds a path of ``keep`` (the
    corpus, a teacher)."""
    if out.exists() and not out.is_dir():
        raise MinidmlError(f"--out {out}: exists and is not a directory; choose another path")
    if out.exists() and any(out.iterdir()):
        inside = [k for k in keep if Path(k).resolve().is_relative_to(out.resolve())]
        if inside:
            raise MinidmlError(f"--out {out}: holds {inside[0]}, which this run reads; choose "
                               "another --out")
        if not force:
            raise MinidmlError(f"--out {out}: already exists; pass --resume to continue it "
                               "or --force to overwrite it")
        shutil.rmtree(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MinidmlError(f"--out {out}: not writable ({e.strerror}); choose another "
                           "directory") from None


def _check_resume_config(saved: dict[str, Any], cfg: TrainConfig, out: Path) -> None:
    old = TrainConfig.from_dict(saved["config"], str(out / "config.json")).to_dict()
    new = cfg.to_dict()
    # where it runs and what to do about NaNs may change; teachers may move (their identity,
    # not their path, is checked against config.json's records); precision auto keeps the
    # precision the run started with
    for key in sorted(new):
        if key == "precision" and new[key] == "auto":
            continue
        if key not in ("device", "on_nonfinite", "teachers") and old.get(key) != new[key]:
            raise MinidmlError(f"--resume: option {key!r} differs from the run's config.json "
                               f"({old.get(key)!r} there, {new[key]!r} now); use the same "
                               "settings or start a new run with another --out")


def train(corpus: str | os.PathLike | Sequence[str | os.PathLike],
          out: str | os.PathLike | None = None, config: TrainConfig | None = None, *,
          resume: bool = False, force: bool = False, progress: bool = False,
          callbacks: Sequence[Callback] = (), cache_dir: str | os.PathLike | None = None,
          on_start: Callable[[Path], None] | None = None,
          tokenizer: Tokenizer | str | os.PathLike | None = None, **overrides: Any) -> Run:
    """Train students on ``corpus`` (paths to text, .gz/.xz files or directories).

    ``config`` (default :class:`TrainConfig`) is updated with ``overrides``. The run goes to
    ``out`` or to a new directory under ``runs/``. With ``resume=True`` an existing run is
    continued exactly where its last checkpoint left it. ``tokenizer`` (a
    :class:`Tokenizer` or a ``.model`` file) is used instead of training one, so that several
    runs share it; in ``kd`` mode the teachers' tokenizer is the default. Returns the
    trained :class:`Run`.

    Launched by ``torchrun``, every process calls this: the students are placed across the
    ranks (see :mod:`minidml.distributed`), rank 0 writes the run directory, and every rank
    returns the same :class:`Run`; ``on_start`` is called on rank 0 only.
    """
    paths = [corpus] if isinstance(corpus, str | os.PathLike) else list(corpus)
    cfg = (config or TrainConfig()).replace(**overrides)
    cfg = cfg.replace(teachers=tuple(str(Path(t).resolve()) for t in cfg.teachers))
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.load(tokenizer)
    files = corpus_files(paths)
    with session(cfg.device) as comm:  # a world of one unless launched by torchrun

        def start() -> tuple[Path, bool, bool]:
            out_dir = Path(out) if out is not None else default_run_dir(paths)
            again = resume and _stopped_before_start(out_dir)  # nothing to resume yet
            _prepare_run_dir(out_dir, resume and not again, force or again,
                             keep=[*files, *cfg.teachers])
            return out_dir, resume and not again, force or again

        out_dir, resume, force = comm.on_main(start, share=True)
        try:
            trainer = _setup(files, out_dir, cfg, resume, progress and comm.is_main, callbacks,
                             cache_dir, tokenizer, comm)
        except BaseException:
            if not resume and comm.is_main:  # nothing half-made stays behind
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        if on_start is not None and comm.is_main:
            on_start(out_dir)
        trainer.fit()
        return Run(out_dir, trainer.config, trainer.tokenizer, trainer.students, trainer.omega,
                   trainer.step, trainer.last_eval)


def load_teachers(paths: Sequence[str | os.PathLike], device: str = "cpu"
                  ) -> tuple[list[Student], Tokenizer, list[dict[str, Any]]]:
    """The champion student of each teacher run, their common tokenizer, and a record of
    each (run, student, step, shape) for ``config.json``."""
    models, records, tokenizer = [], [], None
    for path in paths:
        try:
            run = load(path, device)
        except MinidmlError as e:
            raise MinidmlError(f"--teacher {path}: {e}") from None
        if tokenizer is not None and run.tokenizer.sha256 != tokenizer.sha256:
            raise MinidmlError(f"--teacher {path}: its tokenizer differs from that of --teacher "
                               f"{paths[0]}; teachers of one student must share a tokenizer")
        tokenizer = tokenizer or run.tokenizer
        i = run.champion
        models.append(run.students[i])
        weights = latest_checkpoint(Path(path)) / f"student-{i}.pt"
        records.append({"run": str(path), "student": i, "step": run.step,
                        "n_params": run.students[i].config.n_params,
                        "shape": dataclasses.asdict(run.config.students[i]),
                        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest()})
    if tokenizer is None:
        raise MinidmlError("--mode kd: needs at least one --teacher RUN_DIR (a trained run)")
    return models, tokenizer, records


def _check_teachers(cfg: TrainConfig, teachers: list[Student], teacher_tok: Tokenizer | None,
                    tokenizer: Tokenizer) -> None:
    if teacher_tok is not None and teacher_tok.sha256 != tokenizer.sha256:
        raise MinidmlError(f"--teacher {cfg.teachers[0]}: the teacher's tokenizer "
                           f"(vocabulary {teacher_tok.vocab_size}) is not the student's "
                           f"({tokenizer.vocab_size}); distil with the teacher's tokenizer "
                           "(drop --vocab-size or the tokenizer you gave)")
    for path, t in zip(cfg.teachers, teachers, strict=True):
        if t.config.context < cfg.context:
            raise MinidmlError(f"--teacher {path}: its context ({t.config.context}) is shorter "
                               f"than --context {cfg.context}; use --context "
                               f"{t.config.context} or less")


def _on_main_tokenizer(comm: Comm, make: Callable[[], Tokenizer]) -> Tokenizer:
    """``make()`` on rank 0, the same tokenizer everywhere."""
    if comm.world_size == 1:
        return make()
    return Tokenizer(comm.on_main(lambda: make().to_bytes(), share=True))


def _setup(files: list[Path], out_dir: Path, cfg: TrainConfig, resume: bool, progress: bool,
           callbacks: Sequence[Callback], cache_dir: str | os.PathLike | None,
           tokenizer: Tokenizer | None = None, comm: Comm | None = None) -> Trainer:
    """Tokenizer, token file, batches, students (and teachers) of a new or resumed run.

    With a ``comm`` of several ranks, rank 0 alone reads and writes the run directory and
    trains the tokenizer (sent to the others), and fills the token cache before the others
    read it; every rank builds every student from the same seed."""
    comm = comm or Comm()
    corpus_hash = fingerprint(files)
    teachers, teacher_tok, teacher_meta = [], None, []
    if cfg.mode == "kd":
        teachers, teacher_tok, teacher_meta = load_teachers(cfg.teachers, cfg.device)
    if resume:
        meta = comm.on_main(lambda: read_run_config(out_dir), share=True)
        tokenizer = _on_main_tokenizer(comm, lambda: Tokenizer.load(out_dir / "tokenizer.model"))
        _check_tokenizer(out_dir, meta, tokenizer)
        cfg = cfg.resolve_shapes(tokenizer.vocab_size)
        _check_resume_config(meta, cfg, out_dir)
        if meta.get("corpus", {}).get("fingerprint") != corpus_hash:
            raise MinidmlError("--resume: the corpus differs from the one this run was "
                               "trained on; give the same files")
        for then, now in zip(meta.get("teachers", []), teacher_meta, strict=False):
            if {**then, "run": None} != {**now, "run": None}:  # the same weights, moved or not
                raise MinidmlError(f"--resume: teacher {now['run']} has changed since this "
                                   f"run started (student {then.get('student')} at step "
                                   f"{then.get('step')} then, student {now['student']} at "
                                   f"step {now['step']} now); restore it or start a new run")
    else:
        if tokenizer is None:
            tokenizer = teacher_tok
        if tokenizer is None:
            tokenizer = _on_main_tokenizer(comm, lambda: Tokenizer.train(
                read_lines(files, cfg.encoding_errors), cfg.vocab_size, cfg.tokenizer_type,
                seed=cfg.seed))
        elif cfg.vocab_size is not None and cfg.vocab_size != tokenizer.vocab_size:
            raise MinidmlError(f"--vocab-size {cfg.vocab_size}: the given tokenizer has "
                               f"{tokenizer.vocab_size} pieces; drop --vocab-size")
        cfg = cfg.resolve_shapes(tokenizer.vocab_size)
    _check_teachers(cfg, teachers, teacher_tok, tokenizer)
    tokens = comm.first_on_main(lambda: tokenize_corpus(files, tokenizer, cache_dir,
                                                        cfg.encoding_errors, progress))
    batches = Batches(tokens, cfg.context, cfg.batch_size, val_fraction=cfg.val_fraction,
                      holdout_fraction=cfg.holdout_fraction, seed=cfg.seed)
    scfgs = student_configs(cfg, tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)
    students = [Student(c) for c in scfgs]
    comm.place([c.n_params for c in scfgs], resolve_device(cfg.device),
               (cfg.batch_size, cfg.outer_batch_size or cfg.batch_size), cfg.peer_dtype)
    trainer = Trainer(cfg, students, batches, out_dir, callbacks, progress, tokenizer=tokenizer,
                      teachers=teachers, comm=comm,
                      precision=_recorded_precision(meta, cfg) if resume else None,
                      compiled=_recorded_compile(meta) if resume else None)
    if resume:
        trainer.resume()
        return trainer
    comm.on_main(lambda: _write_run_files(out_dir, cfg, scfgs, tokenizer, files, corpus_hash,
                                          batches, trainer.total_steps, teacher_meta,
                                          comm.world_size, trainer.precision_record,
                                          trainer.compile_record))
    return trainer


def _recorded_compile(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a resumed run started compiled (runs from before compiling existed did not)."""
    record = meta.get("compile")
    if isinstance(record, dict) and isinstance(record.get("choice"), bool):
        return record
    return {"requested": "off", "choice": False, "line": "compile: off (as the run started)"}


def _recorded_precision(meta: Mapping[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """The precision a resumed run started with (runs from before ``auto`` existed recorded
    none: theirs was the configured one)."""
    record = meta.get("precision")
    if isinstance(record, dict) and record.get("choice") in ("fp32", "bf16"):
        return record
    return {"requested": cfg.precision, "choice": "bf16" if cfg.precision == "bf16" else "fp32"}


def _write_run_files(out_dir: Path, cfg: TrainConfig, scfgs: list[StudentConfig],
                     tokenizer: Tokenizer, files: list[Path], corpus_hash: str,
                     batches: Batches, total_steps: int, teacher_meta: list[dict[str, Any]],
                     world_size: int, precision: dict[str, Any], compiled: dict[str, Any]
                     ) -> None:
    tokenizer.save(out_dir / "tokenizer.model")
    _io.write_json(out_dir / "config.json", {
        "minidml_version": __version__, "torch_version": torch.__version__,
        "created": _io.utc_now(), "config": cfg.to_dict(), "world_size": world_size,
        "students": [{**c.__dict__, "n_params": c.n_params} for c in scfgs],
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256,
                      "type": cfg.tokenizer_type},
        "corpus": {"files": [str(f) for f in files], "fingerprint": corpus_hash,
                   "train_tokens": batches.n_train_tokens, "val_tokens": batches.n_val_tokens},
        "total_steps": total_steps, "precision": precision, "compile": compiled,
        **({"teachers": teacher_meta} if teacher_meta else {}),
    })
    (out_dir / "metrics.jsonl").touch()
