"""GLUE / SuperGLUE by fine-tuning: the ``glue`` suite (BabyLM 2024 protocol).

Every task fine-tunes a copy of each student with a linear classification head and reports
its best epoch on the validation file. The originals are never touched.

**Tasks** (BabyLM 2024's list): boolq, cola, mnli, mnli-mm, mrpc, multirc, qnli, qqp, rte,
sst2, wsc. Data under the data root: ``babylm-eval/glue_filtered/{task}.valid.jsonl`` and a
training file ``babylm-eval/glue_filtered/{task}.train.jsonl`` (or ``.jsonl.xz``), else
``babylm-eval/glue_filtered_2025_extra/{task}.train.jsonl`` (the 2025 release's 10k-row mnli
and qqp subsamples; a note says so). mnli-mm has no training file of its own: it is scored
with the mnli model, at the epoch chosen on mnli's validation set. A task without a training
(or validation) file is listed in ``notes`` as unavailable and left out of the results; with
the 2024 data that is boolq and qnli.

**Inputs** and **metrics** of each task: :mod:`minidml_plugins.glue_tasks`.

**Model and training**: a deep copy of the student (in float32) plus ``Linear(d_model,
classes)`` (N(0, 0.02) weights, zero bias) on the hidden state of the last non-pad token
(``student.trunk``). All weights are trained with AdamW (lr 5e-5, no weight decay, linear
decay to 0 over the planned steps, gradient norm clipped at 1, as Hugging Face's Trainer
does by default), batches of 64, up to 10 epochs; after each epoch the task's primary metric
on the validation set decides: the best epoch's predictions are kept and training stops after
3 epochs without improvement. ``seed`` (default 0) fixes the head's initialisation, the
shuffling and the ``max_train_examples`` subsample; every student gets the same ones.

**Options** (``ctx.options``, all optional): ``tasks`` (a list or a comma-separated string),
``max_train_examples`` (the first N rows of a seeded shuffle of the training file),
``epochs``, ``lr``, ``finetune_batch_size``, ``patience``, ``max_length``, ``seed``.
``ctx.limit`` caps the validation examples per task; ``ctx.batch_size`` is the prediction
batch size.

**Ensemble**: ``ensemble`` reports the ω-weighted mixture of the fine-tuned students' class
probabilities (every student is fine-tuned then).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from minidml import MinidmlError
from minidml.evaluation.hookspecs import hookimpl
from minidml.evaluation.suite import (
    ENSEMBLE,
    EvalContext,
    SuiteResult,
    TaskResult,
    read_jsonl,
)
from minidml.model import Student
from minidml.tokenizer import Tokenizer
from minidml_plugins._sources import sources
from minidml_plugins.glue_tasks import (
    DIR,
    EXTRA_DIR,
    TASKS,
    TaskSpec,
    parse_tasks,
    primary_score,
    task_metrics,
    train_candidates,
    valid_path,
)

__all__ = ["GlueSuite", "Settings", "encode_pair", "finetune", "register_suites"]

SUITE = "glue"


# ----------------------------------------------------------------------------- settings
@dataclass(frozen=True)
class Settings:
    """Fine-tuning settings; :meth:`from_options` reads them from ``ctx.options``."""

    tasks: tuple[str, ...] = tuple(TASKS)
    max_train_examples: int | None = None
    epochs: int = 10
    lr: float = 5e-5
    batch_size: int = 64
    patience: int = 3
    max_length: int = 128
    seed: int = 0

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        def integer(key: str, default: int | None, minimum: int) -> int | None:
            value = options.get(key)
            if value is None:
                return default
            try:
                if isinstance(value, bool) or (isinstance(value, float)
                                               and not value.is_integer()):
                    raise ValueError
                number = int(value)
            except (TypeError, ValueError):
                number = minimum - 1
            if number < minimum:
                raise MinidmlError(f"glue option {key}={value!r}: must be a whole number "
                                   f"of at least {minimum}")
            return number

        lr = options.get("lr")
        if lr is None:
            lr = cls.lr
        else:
            try:
                if isinstance(lr, bool):
                    raise ValueError
                lr = float(lr)
            except (TypeError, ValueError):
                lr = float("nan")
            if not (lr > 0 and math.isfinite(lr)):
                raise MinidmlError(f"glue option lr={options['lr']!r}: must be a positive "
                                   "number")
        return cls(tasks=parse_tasks(options.get("tasks")),
                   max_train_examples=integer("max_train_examples", None, 1),
                   epochs=integer("epochs", cls.epochs, 1),
                   lr=lr,
                   batch_size=integer("finetune_batch_size", cls.batch_size, 1),
                   patience=integer("patience", cls.patience, 1),
                   max_length=integer("max_length", cls.max_length, 4),
                   seed=integer("seed", cls.seed, 0))


# ----------------------------------------------------------------------------- data
@dataclass
class Encoded:
    """Token ids (each ``BOS seg1 EOS [seg2 EOS]``) and labels of one file's rows."""

    ids: list[list[int]]
    labels: torch.Tensor  # long [n]

    def __len__(self) -> int:
        return len(self.ids)


def truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Segment lengths after cutting one token at a time from the longer segment (the first
    on a tie) until they fit ``budget`` tokens together."""
    if len_a + len_b <= budget:
        return len_a, len_b
    if len_a < len_b and 2 * len_a <= budget:
        return len_a, budget - len_a
    if len_b < len_a and 2 * len_b <= budget:
        return budget - len_b, len_b
    return budget // 2, budget - budget // 2


def encode_pair(a: Sequence[int], b: Sequence[int] | None, max_length: int,
                bos: int = Tokenizer.bos_id, eos: int = Tokenizer.eos_id) -> list[int]:
    """``BOS a EOS`` or ``BOS a EOS b EOS``, at most ``max_length`` ids (the longer segment
    loses tokens from its end); ``bos`` and ``eos`` are the tokenizer's."""
    if b is None:
        return [bos, *a[:max(0, max_length - 2)], eos]
    la, lb = truncated_lengths(len(a), len(b), max(0, max_length - 3))
    return [bos, *a[:la], eos, *b[:lb], eos]


def _label(value: Any, n_classes: int, where: str) -> int:
    if isinstance(value, bool):
        value = int(value)
    if not isinstance(value, int) or not 0 <= value < n_classes:
        raise MinidmlError(f"{where}: label {value!r} is not one of "
                           f"{', '.join(map(str, range(n_classes)))}; re-download the file")
    return value


def load_rows(path: Path, spec: TaskSpec, limit: int | None = None,
              sample: int | None = None, seed: int = 0
              ) -> tuple[list[tuple[str, str | None]], list[int]]:
    """Segments and labels of a task file: all rows, the first ``limit``, or (``sample``)
    the first N of a seeded shuffle."""
    rows = read_jsonl(path, (*spec.fields, "label"))
    if not rows:
        raise MinidmlError(f"{path}: no examples; re-download the file")
    numbered = list(enumerate(rows, 1))
    if sample is not None and sample < len(numbered):
        random.Random(seed).shuffle(numbered)
        numbered = numbered[:sample]
    if limit is not None:
        numbered = numbered[:limit]
    segments, labels = [], []
    for number, row in numbered:
        where = f"{path}: row {number}"
        seg = spec.segments(row)
        for k in spec.fields:
            if not isinstance(row[k], str):
                raise MinidmlError(f"{where}: field {k} is {type(row[k]).__name__}, "
                                   "expected text")
        segments.append(seg)
        labels.append(_label(row["label"], spec.n_classes, where))
    return segments, labels


def encode_rows(tokenizer: Tokenizer, segments: Sequence[tuple[str, str | None]],
                labels: Sequence[int], max_length: int) -> Encoded:
    firsts = tokenizer.encode_batch([a for a, _ in segments])
    seconds = iter(tokenizer.encode_batch([b for _, b in segments if b is not None]))
    ids = [encode_pair(a, None if b is None else next(seconds), max_length,
                       tokenizer.bos_id, tokenizer.eos_id)
           for a, (_, b) in zip(firsts, segments, strict=True)]
    return Encoded(ids, torch.tensor(list(labels), dtype=torch.long))


def _collate(enc: Encoded, index: Sequence[int], device: torch.device
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T], lengths [B] and labels [B] of some rows."""
    lengths = [len(enc.ids[i]) for i in index]
    x = torch.full((len(index), max(lengths)), Tokenizer.pad_id, dtype=torch.long)
    for r, i in enumerate(index):
        x[r, :lengths[r]] = torch.tensor(enc.ids[i])
    return (x.to(device), torch.tensor(lengths).to(device),
            enc.labels[torch.as_tensor(list(index), dtype=torch.long)].to(device))


# ----------------------------------------------------------------------------- model
class Classifier(nn.Module):
    """A student's trunk plus a linear head on the hidden state of the last non-pad token."""

    def __init__(self, student: Student, n_classes: int, generator: torch.Generator):
        super().__init__()
        self.student = copy.deepcopy(student).float()
        self.student.requires_grad_(True)
        self.head = nn.Linear(student.config.d_model, n_classes)
        with torch.no_grad():
            self.head.weight.copy_(torch.randn(self.head.weight.shape, generator=generator)
                                   * 0.02)
            self.head.bias.zero_()

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.student.trunk(ids)  # causal: the padding on the right changes nothing
        last = hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1]
        return self.head(last)


@torch.no_grad()
def predict(model: Classifier, enc: Encoded, batch_size: int, device: torch.device
            ) -> torch.Tensor:
    """Class probabilities [n, classes] (float32, CPU) in the rows' order."""
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: -len(enc.ids[i]))
    out = torch.zeros(len(enc), model.head.out_features)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x, lengths, _ = _collate(enc, index, device)
        out[torch.tensor(index)] = model(x, lengths).float().softmax(-1).cpu()
    return out


def finetune(student: Student, spec: TaskSpec, train: Encoded, valid: Encoded,
             companions: Mapping[str, Encoded], settings: Settings, *,
             eval_batch_size: int = 64, progress: bool = False, desc: str = ""
             ) -> dict[str, torch.Tensor]:
    """Fine-tune a copy of ``student`` on ``train``, choosing the epoch by ``spec``'s primary
    metric on ``valid``; the class probabilities of that epoch on ``valid`` (key
    ``spec.name``) and on each companion set (e.g. mnli-mm for mnli)."""
    device = next(student.parameters()).device
    gen = torch.Generator().manual_seed(settings.seed)
    model = Classifier(student, spec.n_classes, gen).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = settings.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))
    best_score, best, best_state, stale = -math.inf, None, None, 0
    bar = tqdm(total=settings.epochs * len(train), desc=desc or spec.name, unit="example",
               disable=not progress, leave=False, dynamic_ncols=True)
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        for start in range(0, len(order), settings.batch_size):
            x, lengths, y = _collate(train, order[start:start + settings.batch_size], device)
            loss = F.cross_entropy(model(x, lengths).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            bar.update(len(y))
        probs = predict(model, valid, eval_batch_size, device)
        score = primary_score(spec, probs.argmax(-1), valid.labels)
        if best is None or score > best_score:
            best_score, best, stale = score, probs, 0
            if companions:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= settings.patience:
                break
    bar.close()
    out = {spec.name: best}
    if companions:
        model.load_state_dict(best_state)
        out.update({name: predict(model, enc, eval_batch_size, device)
                    for name, enc in companions.items()})
    return out


def mixture(probs: Sequence[torch.Tensor], omega: torch.Tensor) -> torch.Tensor:
    """Σ_i ω_i p_i of the students' class probabilities (ω renormalised to sum to 1)."""
    w = omega.detach().double().cpu()
    w = w / w.sum()
    return sum(float(wi) * p.double() for wi, p in zip(w, probs, strict=True)).float()


# ----------------------------------------------------------------------------- the suite
class GlueSuite:
    """``evaluate(ctx)``: fine-tune and score every requested task (see the module doc)."""

    def evaluate(self, ctx: EvalContext) -> SuiteResult:
        settings = Settings.from_options(ctx.options)
        run = ctx.run
        tokenizer: Tokenizer = run.tokenizer
        context = min(s.config.context for s in run.students)
        max_length = min(settings.max_length, context)
        reported = ctx.student_indices()
        with_ensemble = ENSEMBLE in ctx.labels
        tuned = list(range(len(run.students))) if with_ensemble else reported
        root = Path(ctx.data_dir)
        notes: list[str] = []
        if settings.max_train_examples is not None:
            notes.append(f"training rows capped at {settings.max_train_examples} per task "
                         "(max_train_examples)")

        # tasks grouped by the task whose model scores them (mnli-mm rides with mnli)
        units: dict[str, list[str]] = {}
        for task in settings.tasks:
            units.setdefault(TASKS[task].trained_as or task, []).append(task)

        results: dict[str, dict[str, TaskResult]] = {lb: {} for lb in ctx.labels}
        done: list[str] = []
        for train_task, evals in units.items():
            spec = TASKS[train_task]
            train_rel = next((r for r in train_candidates(train_task) if (root / r).is_file()),
                             None)
            if train_rel is None:
                for task in evals:
                    whose = "" if task == train_task else f" for {train_task}"
                    notes.append(f"{task}: no training file{whose} "
                                 f"({train_candidates(train_task)[0]}); unavailable")
                continue
            if not (root / valid_path(train_task)).is_file():
                for task in evals:
                    notes.append(f"{task}: no validation file ({valid_path(train_task)})"
                                 "; unavailable")
                continue
            companions: dict[str, Encoded] = {}
            for task in evals:
                if task != train_task:
                    if (root / valid_path(task)).is_file():
                        seg, lab = load_rows(root / valid_path(task), TASKS[task], ctx.limit)
                        companions[task] = encode_rows(tokenizer, seg, lab, max_length)
                    else:
                        notes.append(f"{task}: no validation file ({valid_path(task)})"
                                     "; unavailable")
            if train_rel.startswith(EXTRA_DIR):
                notes.append(f"{train_task}: trained on {train_rel} (the 2025 release's "
                             "subsample; the 2024 training set is not available)")
            seg, lab = load_rows(root / train_rel, spec, sample=settings.max_train_examples,
                                 seed=settings.seed)
            train = encode_rows(tokenizer, seg, lab, max_length)
            seg, lab = load_rows(root / valid_path(train_task), spec, ctx.limit)
            valid = encode_rows(tokenizer, seg, lab, max_length)
            gold = {train_task: valid.labels, **{t: e.labels for t, e in companions.items()}}

            probs: dict[int, dict[str, torch.Tensor]] = {}
            for i in tuned:
                probs[i] = finetune(run.students[i], spec, train, valid, companions, settings,
                                    eval_batch_size=ctx.batch_size, progress=ctx.progress,
                                    desc=f"glue/{train_task} student-{i}")
            scored = [t for t in evals if t in gold]
            for task in scored:
                tspec = TASKS[task]
                for i in reported:
                    results[f"student-{i}"][task] = self._result(
                        tspec, probs[i][task], gold[task], settings.seed)
                if with_ensemble:
                    mixed = mixture([probs[i][task] for i in tuned], run.omega)
                    results[ENSEMBLE][task] = self._result(tspec, mixed, gold[task],
                                                           settings.seed)
            done += scored
        available = tuple(t for t in TASKS if t in done)
        return SuiteResult(results, {SUITE: available}, notes)

    @staticmethod
    def _result(spec: TaskSpec, probs: torch.Tensor, gold: torch.Tensor, seed: int
                ) -> TaskResult:
        pred = probs.argmax(-1)
        return TaskResult(spec.name, task_metrics(spec, pred, gold, seed), int(gold.numel()),
                          spec.primary)


# ----------------------------------------------------------------------------- registration
@hookimpl
def register_suites(register: Callable[..., None]) -> None:
    register(SUITE, GlueSuite,
             description="GLUE/SuperGLUE (BabyLM 2024): fine-tune each student with a "
                         "classification head; acc, MCC (cola), F1 (mrpc, qqp)",
             version="1", requires=(DIR,), sources=sources(f"{DIR}/", f"{EXTRA_DIR}/"))

