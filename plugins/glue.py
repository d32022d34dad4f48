"""GLUE / SuperGLUE by fine-tuning: the ``glue`` suite, by the BabyLM 2024 recipe (the
default) or the BabyLM 2026 one (``glue_set``).

Every task fine-tunes a copy of each student with a classification head and reports its best
epoch on the validation file. The originals are never touched. The two recipes run the same
code and differ only in their :class:`Settings` (:data:`SETS`).

**glue_set 2024** (the default). *Tasks* (BabyLM 2024's list): boolq, cola, mnli, mnli-mm,
mrpc, multirc, qnli, qqp, rte, sst2, wsc. Data under the data root:
``babylm-eval/glue_filtered/{task}.valid.jsonl`` and a training file
``babylm-eval/glue_filtered/{task}.train.jsonl`` (or ``.jsonl.xz``), else
``babylm-eval/glue_filtered_2025_extra/{task}.train.jsonl`` (the 2025 release's 10k-row mnli
and qqp subsamples; a note says so). mnli-mm has no training file of its own: it is scored
with the mnli model, at the epoch chosen on mnli's validation set. *Inputs* and *metrics*:
:mod:`minidml_plugins.glue_tasks` (``BOS seg1 EOS [seg2 EOS]``, at most 128 tokens). *Model
and training*: a deep copy of the student (in float32) plus ``Linear(d_model, classes)``
(N(0, 0.02) weights, zero bias) on the hidden state of the last non-pad token
(``student.trunk``). All weights are trained with AdamW (lr 5e-5, no weight decay, linear
decay to 0 over the planned steps, gradient norm clipped at 1, as Hugging Face's Trainer
does by default), batches of 64, up to 10 epochs; after each epoch the task's primary metric
on the validation set decides: the best epoch's predictions are kept and training stops after
3 epochs without improvement. Seed 0.

**glue_set 2026**: the official BabyLM 2026 pipeline's fine-tuning (``scripts/
eval_finetuning.sh`` and the defaults of ``evaluation_pipeline/finetune/run.py``). *Tasks*:
boolq, multirc, rte, wsc, mrpc, qqp, mnli; training files ``glue_filtered/{task}.train.jsonl``
(``.jsonl.xz``), for mnli and qqp the 10,000-row ``glue_filtered_2025_extra/{task}.train.jsonl``
(the 2026 files themselves). *Inputs* as the pipeline builds them (boolq question | passage;
multirc ``Question: {question} Answer: {answer}`` | paragraph; wsc ``Does "{span2_text}"
refer to "{span1_text}" in this passage?`` | text; the rest as in 2024), encoded as the model's
own tokenizer encodes a pair with its special tokens (a minidml tokenizer: ``BOS a BOS b``,
its export's template), cut by the fast tokenizers' ``longest_first`` rule to 512 tokens,
never beyond the students' context (a note states the length used). *Model*: the pipeline's
head on the last non-pad token (right padding: the pipeline's ``--take_final --padding_side
left``; ``pooling`` ``first`` reads position 0, its unflagged default): LayerNorm (no affine,
eps 1e-5), ``Linear(d, d)``, GELU, LayerNorm, dropout 0.1, ``Linear(d, classes)`` (PyTorch's
default initialisation). *Training*: AdamW (lr 3e-5, betas (0.9, 0.999), eps 1e-8, weight
decay 0.01 on every weight), no clipping, linear warmup over 6% of the steps then cosine to
0.1 of the peak; batches of 32 (16 for boolq and multirc), the last partial batch of an epoch
dropped (a training set smaller than one batch is one batch); 10 epochs (wsc 30), all run;
the best epoch by the validation accuracy (F1 for mrpc and qqp) is kept. Seed 42. *Metrics*:
accuracy, F1 and MCC for the two-class tasks, accuracy for mnli; boolq's training file has no
public copy, so under 2026 boolq is one note, unavailable, and the others run.

A task without a training (or validation) file is listed in ``notes`` as unavailable and
left out of the results. ``seed`` fixes the head's initialisation, the shuffling, the dropout
and the ``max_train_examples`` subsample; every student gets the same ones.

**Options** (``ctx.options``, all optional): ``glue_set`` (``2024`` or ``2026``), ``tasks`` (a
list or a comma-separated string, within the set), ``max_train_examples`` (the first N rows of
a seeded shuffle of the training file), ``epochs`` and ``finetune_batch_size`` (every task's,
replacing the per-task values), ``lr``, ``patience`` (stop after that many epochs without
improvement; 2026 has none), ``max_length``, ``seed``, ``pooling`` (``last`` or ``first``).
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
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast

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

from ._sources import sources
from .glue_tasks import (
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

__all__ = ["SETS", "TASKS_2026", "GlueSuite", "MLPHead", "Settings", "encode_pair",
           "encode_pair_2026", "fast_truncated_lengths", "finetune", "lr_factor",
           "register_suites", "task_result"]

SUITE = "glue"


# ----------------------------------------------------------------------------- 2026 tasks
def _multirc_2026(row: Mapping[str, Any]) -> tuple[str, str | None]:
    return f"Question: {row['question']} Answer: {row['answer']}", row["paragraph"]


def _wsc_2026(row: Mapping[str, Any]) -> tuple[str, str | None]:
    return (f'Does "{row["span2_text"]}" refer to "{row["span1_text"]}" in this passage?',
            row["text"])


# the pipeline's order (scripts/eval_finetuning.sh) and its inputs (finetune/dataset.py)
TASKS_2026: dict[str, TaskSpec] = {
    "boolq": TASKS["boolq"],  # question | passage
    "multirc": replace(TASKS["multirc"], segments=_multirc_2026),
    "rte": TASKS["rte"],
    "wsc": replace(TASKS["wsc"], segments=_wsc_2026),
    "mrpc": TASKS["mrpc"],
    "qqp": TASKS["qqp"],
    "mnli": TASKS["mnli"],
}


def _train_files_2026(task: str) -> tuple[str, ...]:
    """The 2026 training file: the 10k-row 2025/2026 subsample for mnli and qqp, else the
    2024 file (the same bytes)."""
    if task in ("mnli", "qqp"):
        return (f"{EXTRA_DIR}/{task}.train.jsonl",)
    return (f"{DIR}/{task}.train.jsonl", f"{DIR}/{task}.train.jsonl.xz")


_TABLES: dict[str, tuple[Mapping[str, TaskSpec], Callable[[str], tuple[str, ...]]]] = {
    "2024": (TASKS, train_candidates),
    "2026": (TASKS_2026, _train_files_2026),
}


# ----------------------------------------------------------------------------- settings
_D = TypeVar("_D")  # the default of an option (Settings.from_options): an int, or None


@dataclass(frozen=True)
class Settings:
    """Fine-tuning settings of one set (:data:`SETS`); :meth:`from_options` reads a set and
    its overrides from ``ctx.options``; :meth:`for_task` resolves the per-task values."""

    glue_set: str = "2024"
    tasks: tuple[str, ...] = tuple(TASKS)
    max_train_examples: int | None = None
    epochs: int = 10
    task_epochs: tuple[tuple[str, int], ...] = ()  # (task, epochs) where not ``epochs``
    lr: float = 5e-5
    batch_size: int = 64
    task_batch_sizes: tuple[tuple[str, int], ...] = ()
    patience: int | None = 3  # None: every epoch runs
    max_length: int = 128
    seed: int = 0
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: str = "linear"  # "linear" (to 0) or "cosine" (warmup, then to min_factor)
    warmup: float = 0.0  # share of the steps
    min_factor: float = 0.0
    clip_norm: float | None = 1.0
    head: str = "linear"  # "linear" or "mlp" (the 2026 pipeline's ClassifierHead)
    dropout: float = 0.0  # in the mlp head
    layer_norm_eps: float = 1e-5  # in the mlp head
    pooling: str = "last"  # the last non-pad token's hidden state, or the first token's
    layout: str = "bos-eos"  # "bos-eos" (BOS a EOS b EOS) or "tokenizer" (its own template)
    drop_last: bool = False  # an epoch's last partial batch
    binary_metrics: tuple[str, ...] = ()  # reported for two-class tasks besides acc, primary
    announce: bool = False  # a note names the set and the length used

    def spec(self, task: str) -> TaskSpec:
        return _TABLES[self.glue_set][0][task]

    @property
    def all_tasks(self) -> tuple[str, ...]:
        return tuple(_TABLES[self.glue_set][0])

    def train_candidates(self, task: str) -> tuple[str, ...]:
        """Where a task's training file may be, in order of preference (relative to the
        data root)."""
        return _TABLES[self.glue_set][1](task)

    def for_task(self, task: str) -> Settings:
        """These settings with the task's own epochs and batch size in ``epochs`` and
        ``batch_size``."""
        return replace(self, epochs=dict(self.task_epochs).get(task, self.epochs),
                       batch_size=dict(self.task_batch_sizes).get(task, self.batch_size),
                       task_epochs=(), task_batch_sizes=())

    @property
    def overrides(self) -> list[str]:
        """The settings that differ from the set's own recipe (the task list aside)."""
        base = SETS[self.glue_set]
        return [f.name for f in fields(self) if f.name != "tasks"
                and getattr(self, f.name) != getattr(base, f.name)]

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> Settings:
        def integer(key: str, default: _D, minimum: int) -> int | _D:
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

        def choice(key: str, default: str, allowed: Sequence[str]) -> str:
            value = options.get(key)
            if value is None:
                return default
            plain = isinstance(value, str | int) and not isinstance(value, bool)
            text = str(value).strip() if plain else None
            if text is None or text not in allowed:
                raise MinidmlError(f"glue option {key}={value!r}: choose "
                                   f"{' or '.join(allowed)}")
            return text

        base = SETS[choice("glue_set", cls.glue_set, tuple(SETS))]
        lr = options.get("lr")
        if lr is None:
            lr = base.lr
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
        changes: dict[str, Any] = {}
        if options.get("epochs") is not None:
            changes.update(epochs=integer("epochs", None, 1), task_epochs=())
        if options.get("finetune_batch_size") is not None:
            changes.update(batch_size=integer("finetune_batch_size", None, 1),
                           task_batch_sizes=())
        return replace(base, **changes,
                       tasks=_set_tasks(options.get("tasks"), base),
                       max_train_examples=integer("max_train_examples", None, 1),
                       lr=lr,
                       patience=integer("patience", base.patience, 1),
                       max_length=integer("max_length", base.max_length, 4),
                       seed=integer("seed", base.seed, 0),
                       pooling=choice("pooling", base.pooling, ("last", "first")))


def _set_tasks(value: Any, base: Settings) -> tuple[str, ...]:
    """The requested tasks of the set, in its order."""
    if value is None:
        return base.all_tasks
    names = parse_tasks(value)
    outside = [t for t in names if t not in base.all_tasks]
    if outside:
        raise MinidmlError(f"glue option tasks: {', '.join(outside)} not in the "
                           f"{base.glue_set} set (glue_set); choose from "
                           f"{', '.join(base.all_tasks)}")
    return tuple(t for t in base.all_tasks if t in names)


SETS: dict[str, Settings] = {
    "2024": Settings(),
    "2026": Settings(
        glue_set="2026", tasks=tuple(TASKS_2026), epochs=10, task_epochs=(("wsc", 30),),
        lr=3e-5, batch_size=32, task_batch_sizes=(("boolq", 16), ("multirc", 16)),
        patience=None, max_length=512, seed=42, weight_decay=0.01, betas=(0.9, 0.999),
        eps=1e-8, schedule="cosine", warmup=0.06, min_factor=0.1, clip_norm=None, head="mlp",
        dropout=0.1, layer_norm_eps=1e-5, pooling="last", layout="tokenizer", drop_last=True,
        binary_metrics=("f1", "mcc"), announce=True),
}


# ----------------------------------------------------------------------------- data
@dataclass
class Encoded:
    """Token ids of one file's rows (each as the set's layout builds it) and their labels."""

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


def fast_truncated_lengths(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """Segment lengths as Hugging Face's fast tokenizers cut a pair (``longest_first``): the
    shorter segment is kept whole if it fits in half the budget and the longer one gets the
    rest; otherwise each gets half, the longer one (``b`` on a tie) the odd token."""
    if len_a + len_b <= budget:
        return len_a, len_b
    short, long_ = sorted((len_a, len_b))
    if 2 * short <= budget:
        keep_short, keep_long = short, budget - short
    else:
        keep_short, keep_long = budget // 2, budget - budget // 2
    return (keep_long, keep_short) if len_a > len_b else (keep_short, keep_long)


def encode_pair(a: Sequence[int], b: Sequence[int] | None, max_length: int,
                bos: int = Tokenizer.bos_id, eos: int = Tokenizer.eos_id) -> list[int]:
    """``BOS a EOS`` or ``BOS a EOS b EOS``, at most ``max_length`` ids (the longer segment
    loses tokens from its end); ``bos`` and ``eos`` are the tokenizer's. (glue_set 2024)"""
    if b is None:
        return [bos, *a[:max(0, max_length - 2)], eos]
    la, lb = truncated_lengths(len(a), len(b), max(0, max_length - 3))
    return [bos, *a[:la], eos, *b[:lb], eos]


def encode_pair_2026(a: Sequence[int], b: Sequence[int] | None, max_length: int,
                     bos: int = Tokenizer.bos_id) -> list[int]:
    """``BOS a`` or ``BOS a BOS b``, at most ``max_length`` ids: what a minidml student's
    exported tokenizer gives for ``tokenizer(a, b, truncation=True, max_length=...)``, as
    the 2026 pipeline calls it."""
    if b is None:
        return [bos, *a[:max(0, max_length - 1)]]
    la, lb = fast_truncated_lengths(len(a), len(b), max(0, max_length - 2))
    return [bos, *a[:la], bos, *b[:lb]]


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
                labels: Sequence[int], max_length: int, layout: str = "bos-eos") -> Encoded:
    """Token ids of the rows by ``layout``: ``bos-eos`` (:func:`encode_pair`) or
    ``tokenizer``, the tokenizer's own pair template with its special tokens (a Hugging Face
    model's tokenizer itself; a minidml tokenizer: :func:`encode_pair_2026`)."""
    label_tensor = torch.tensor(list(labels), dtype=torch.long)
    own = getattr(tokenizer, "hf", None) if layout == "tokenizer" else None
    if own is not None and segments:  # a Hugging Face model's tokenizer, called as the
        first_texts = [a for a, _ in segments]  # pipeline calls it (a task's rows are all
        second_texts = [b for _, b in segments]  # pairs or all single texts)
        args = (first_texts,) if second_texts[0] is None else (first_texts, second_texts)
        ids = own(*args, truncation=True, max_length=max_length)["input_ids"]
        return Encoded([list(x) for x in ids], label_tensor)
    firsts = tokenizer.encode_batch([a for a, _ in segments])
    seconds = iter(tokenizer.encode_batch([b for _, b in segments if b is not None]))
    if layout == "tokenizer":
        def encode(a: list[int], b: list[int] | None) -> list[int]:
            return encode_pair_2026(a, b, max_length, tokenizer.bos_id)
    else:
        def encode(a: list[int], b: list[int] | None) -> list[int]:
            return encode_pair(a, b, max_length, tokenizer.bos_id, tokenizer.eos_id)
    ids = [encode(a, None if b is None else next(seconds))
           for a, (_, b) in zip(firsts, segments, strict=True)]
    return Encoded(ids, label_tensor)


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
class MLPHead(nn.Module):
    """The 2026 pipeline's classifier head: LayerNorm (no affine), ``Linear(d, d)``, GELU,
    LayerNorm (no affine), dropout, ``Linear(d, classes)``; PyTorch's default initialisation
    (uniform in ±1/√fan_in), drawn from ``generator``, which also draws the dropout masks."""

    def __init__(self, d: int, n_classes: int, dropout: float, eps: float,
                 generator: torch.Generator):
        super().__init__()
        self.dense = nn.Linear(d, d)
        self.out = nn.Linear(d, n_classes)
        self.dropout, self.eps, self.generator = dropout, eps, generator
        with torch.no_grad():
            for layer in (self.dense, self.out):
                bound = 1 / math.sqrt(layer.in_features)
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (x.shape[-1],)
        x = F.layer_norm(F.gelu(self.dense(F.layer_norm(x, shape, eps=self.eps))), shape,
                         eps=self.eps)
        if self.training and self.dropout > 0:
            keep = torch.rand(x.shape, generator=self.generator) >= self.dropout
            x = x * keep.to(x.device) / (1 - self.dropout)
        return self.out(x)


class Classifier(nn.Module):
    """A student's trunk plus a classification head (``settings.head``) on the hidden state
    of the last non-pad token (``settings.pooling`` ``last``) or of the first token."""

    def __init__(self, student: Student, n_classes: int, generator: torch.Generator,
                 settings: Settings | None = None):
        super().__init__()
        settings = settings or Settings()
        self.student = copy.deepcopy(student).float()
        self.student.requires_grad_(True)
        self.n_classes, self.pooling = n_classes, settings.pooling
        d = student.config.d_model
        if settings.head == "mlp":
            self.head: nn.Module = MLPHead(d, n_classes, settings.dropout,
                                           settings.layer_norm_eps, generator)
        else:
            self.head = nn.Linear(d, n_classes)
            with torch.no_grad():
                self.head.weight.copy_(torch.randn(self.head.weight.shape,
                                                   generator=generator) * 0.02)
                self.head.bias.zero_()

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        hidden = self.student.trunk(ids)  # causal: the padding on the right changes nothing
        if self.pooling == "first":
            return self.head(hidden[:, 0])
        return self.head(hidden[torch.arange(ids.shape[0], device=ids.device), lengths - 1])


@torch.no_grad()
def predict(model: Classifier, enc: Encoded, batch_size: int, device: torch.device
            ) -> torch.Tensor:
    """Class probabilities [n, classes] (float32, CPU) in the rows' order."""
    model.eval()
    order = sorted(range(len(enc)), key=lambda i: -len(enc.ids[i]))
    out = torch.zeros(len(enc), model.n_classes)
    for start in range(0, len(order), batch_size):
        index = order[start:start + batch_size]
        x, lengths, _ = _collate(enc, index, device)
        out[torch.tensor(index)] = model(x, lengths).float().softmax(-1).cpu()
    return out


def lr_factor(settings: Settings, total: int) -> Callable[[int], float]:
    """The learning rate's factor after ``step`` optimizer steps of ``total``: linear decay to
    0, or (``cosine``) a linear warmup from 0 over ``int(warmup · total)`` steps, then a
    cosine from 1 down to ``min_factor``, held there."""
    if settings.schedule == "linear":
        return lambda step: max(0.0, 1 - step / total)
    warmup, low = int(settings.warmup * total), settings.min_factor

    def cosine(step: int) -> float:
        if step < warmup:
            return step / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return max(low, low + (1 - low) * (1 + math.cos(math.pi * progress)) / 2)

    return cosine


def steps_per_epoch(n: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps per epoch: every batch, or (``drop_last``) the full ones only (at
    least one)."""
    return max(1, n // batch_size) if drop_last else math.ceil(n / batch_size)


def finetune(student: Student, spec: TaskSpec, train: Encoded, valid: Encoded,
             companions: Mapping[str, Encoded], settings: Settings, *,
             eval_batch_size: int = 64, progress: bool = False, desc: str = ""
             ) -> dict[str, torch.Tensor]:
    """Fine-tune a copy of ``student`` on ``train`` by ``settings`` (one task's: see
    :meth:`Settings.for_task`), choosing the epoch by ``spec``'s primary metric on ``valid``;
    the class probabilities of that epoch on ``valid`` (key ``spec.name``) and on each
    companion set (e.g. mnli-mm for mnli)."""
    if settings.epochs < 1:  # the epoch is chosen among those run: at least one
        raise ValueError(f"finetune: epochs must be at least 1, not {settings.epochs}")
    device = next(student.parameters()).device
    gen = torch.Generator().manual_seed(settings.seed)
    model = Classifier(student, spec.n_classes, gen, settings).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.lr, betas=settings.betas,
                                  eps=settings.eps, weight_decay=settings.weight_decay)
    per_epoch = steps_per_epoch(len(train), settings.batch_size, settings.drop_last)
    total = settings.epochs * per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(settings, total))
    best_score, stale = -math.inf, 0
    best: torch.Tensor | None = None
    best_state: dict[str, torch.Tensor] | None = None
    bar = tqdm(total=total, desc=desc or spec.name, unit="step", disable=not progress,
               leave=False, dynamic_ncols=True)
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(train), generator=gen).tolist()
        for k in range(per_epoch):
            batch = order[k * settings.batch_size:(k + 1) * settings.batch_size]
            x, lengths, y = _collate(train, batch, device)
            loss = F.cross_entropy(model(x, lengths).float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if settings.clip_norm is not None:
                nn.utils.clip_grad_norm_(model.parameters(), settings.clip_norm)
            optimizer.step()
            schedule.step()
            bar.update()
        probs = predict(model, valid, eval_batch_size, device)
        score = primary_score(spec, probs.argmax(-1), valid.labels)
        if best is None or score > best_score:
            best_score, best, stale = score, probs, 0
            if companions:
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if settings.patience is not None and stale >= settings.patience:
                break
    bar.close()
    # settings.epochs >= 1: the first epoch set best, and best_state where there are companions
    out = {spec.name: cast(torch.Tensor, best)}
    if companions:
        model.load_state_dict(cast("dict[str, torch.Tensor]", best_state))
        out.update({name: predict(model, enc, eval_batch_size, device)
                    for name, enc in companions.items()})
    return out


def mixture(probs: Sequence[torch.Tensor], omega: torch.Tensor) -> torch.Tensor:
    """Σ_i ω_i p_i of the students' class probabilities (ω renormalised to sum to 1)."""
    w = omega.detach().double().cpu()
    w = w / w.sum()
    mixed = sum(float(wi) * p.double() for wi, p in zip(w, probs, strict=True))
    return cast(torch.Tensor, mixed).float()  # a tensor: probs is never empty


def task_result(spec: TaskSpec, probs: torch.Tensor, gold: torch.Tensor,
                settings: Settings) -> TaskResult:
    """A task's metrics from the class probabilities: ``acc`` and the primary metric (with
    their stderr), and for a two-class task the set's ``binary_metrics`` (F1, MCC)."""
    pred = probs.argmax(-1)
    metrics = task_metrics(spec, pred, gold, settings.seed)
    if spec.n_classes == 2:
        for name in settings.binary_metrics:
            if name not in metrics:
                metrics.update(task_metrics(replace(spec, primary=name), pred, gold,
                                            settings.seed))
    return TaskResult(spec.name, metrics, int(gold.numel()), spec.primary)


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
        if settings.announce:
            capped = (f" (the recipe's {settings.max_length}, capped at the students' "
                      "context)" if max_length < settings.max_length else "")
            notes.append(f"glue_set {settings.glue_set}: {settings.pooling}-token pooling, "
                         f"sequences of at most {max_length} tokens{capped}")
        if settings.max_train_examples is not None:
            notes.append(f"training rows capped at {settings.max_train_examples} per task "
                         "(max_train_examples)")

        # tasks grouped by the task whose model scores them (mnli-mm rides with mnli)
        units: dict[str, list[str]] = {}
        for task in settings.tasks:
            units.setdefault(settings.spec(task).trained_as or task, []).append(task)

        results: dict[str, dict[str, TaskResult]] = {lb: {} for lb in ctx.labels}
        # each validation example's predicted class, per model and task (the official
        # pipeline's predictions.json): SuiteResult.rows, numbers per row
        predicted: dict[str, dict[str, list[float]]] = {lb: {} for lb in ctx.labels}
        done: list[str] = []
        for train_task, evals in units.items():
            spec = settings.spec(train_task)
            candidates = settings.train_candidates(train_task)
            train_rel = next((r for r in candidates if (root / r).is_file()), None)
            if train_rel is None:
                for task in evals:
                    whose = "" if task == train_task else f" for {train_task}"
                    notes.append(f"{task}: no training file{whose} ({candidates[0]}); "
                                 "unavailable")
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
                        seg, lab = load_rows(root / valid_path(task), settings.spec(task),
                                             ctx.limit)
                        companions[task] = encode_rows(tokenizer, seg, lab, max_length,
                                                       settings.layout)
                    else:
                        notes.append(f"{task}: no validation file ({valid_path(task)})"
                                     "; unavailable")
            if train_rel.startswith(EXTRA_DIR) and not candidates[0].startswith(EXTRA_DIR):
                notes.append(f"{train_task}: trained on {train_rel} (the 2025 release's "
                             "subsample; the 2024 training set is not available)")
            seg, lab = load_rows(root / train_rel, spec, sample=settings.max_train_examples,
                                 seed=settings.seed)
            train = encode_rows(tokenizer, seg, lab, max_length, settings.layout)
            seg, lab = load_rows(root / valid_path(train_task), spec, ctx.limit)
            valid = encode_rows(tokenizer, seg, lab, max_length, settings.layout)
            gold = {train_task: valid.labels, **{t: e.labels for t, e in companions.items()}}

            own = settings.for_task(train_task)
            probs: dict[int, dict[str, torch.Tensor]] = {}
            for i in tuned:
                probs[i] = finetune(run.students[i], spec, train, valid, companions, own,
                                    eval_batch_size=ctx.batch_size, progress=ctx.progress,
                                    desc=f"glue/{train_task} student-{i}")
            scored = [t for t in evals if t in gold]
            for task in scored:
                tspec = settings.spec(task)
                for i in reported:
                    results[f"student-{i}"][task] = task_result(tspec, probs[i][task],
                                                                gold[task], settings)
                    predicted[f"student-{i}"][task] = probs[i][task].argmax(-1).tolist()
                if with_ensemble:
                    mixed = mixture([probs[i][task] for i in tuned], run.omega)
                    results[ENSEMBLE][task] = task_result(tspec, mixed, gold[task], settings)
                    predicted[ENSEMBLE][task] = mixed.argmax(-1).tolist()
            done += scored
        if not done:  # nothing scored: no result to write, and why in one line
            raise MinidmlError("no task could be fine-tuned: " + "; ".join(notes))
        available = tuple(t for t in settings.all_tasks if t in done)
        return SuiteResult(results, {SUITE: available}, notes, rows=predicted,
                           settings={"glue_set": settings.glue_set,
                                     "overrides": settings.overrides})


# ----------------------------------------------------------------------------- registration
@hookimpl
def register_suites(register: Callable[..., None]) -> None:
    register(SUITE, GlueSuite,
             description="GLUE/SuperGLUE: fine-tune each student with a classification head "
                         "(glue_set 2024, the default: BabyLM 2024's tasks and recipe; 2026: "
                         "the 2026 pipeline's); acc, MCC, F1",
             version="1", requires=(DIR,), sources=sources(f"{DIR}/", f"{EXTRA_DIR}/"))
