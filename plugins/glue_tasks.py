"""The GLUE / SuperGLUE tasks of the ``glue`` suite (:mod:`minidml_plugins.glue`): where each
task's files are, what its inputs and classes are, and how it is scored.

**Inputs** (segment 1, segment 2)::

    cola, sst2       sentence
    mrpc, rte        sentence1, sentence2
    mnli, mnli-mm    premise, hypothesis
    qqp              question1, question2
    qnli             question, sentence
    boolq            question, passage
    multirc          paragraph, "{question} {answer}"
    wsc              text, 'Does "{span2_text}" refer to "{span1_text}"?'

(multirc and wsc put the paragraph / text first, so that the last token, which the
classifier reads, comes after the question.) A sequence is ``BOS seg1 EOS [seg2 EOS]``, cut
to ``max_length`` tokens (default 128, never beyond the students' context) by dropping
tokens from the end of the longer segment, one at a time (Hugging Face's ``longest_first``),
and right-padded with the pad id. Labels are stored as ints (bools are accepted): mnli has
3 classes (0 entailment, 1 neutral, 2 contradiction), every other task 2.

**Metrics**: ``acc`` and ``acc_stderr`` everywhere; cola adds the Matthews correlation
``mcc`` (its primary score), mrpc and qqp the F1 of the positive class ``f1`` (primary); the
stderr of mcc and f1 is a seeded bootstrap (1,000 resamples).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from minidml import MinidmlError
from minidml.evaluation.suite import accuracy

DIR = "babylm-eval/glue_filtered"
EXTRA_DIR = "babylm-eval/glue_filtered_2025_extra"
BOOTSTRAP_RESAMPLES = 1000

__all__ = ["DIR", "EXTRA_DIR", "TASKS", "TaskSpec", "f1", "mcc", "parse_tasks", "primary_score",
           "task_metrics", "train_candidates", "valid_path"]


# ----------------------------------------------------------------------------- tasks
def _single(key: str) -> Callable[[Mapping[str, Any]], tuple[str, str | None]]:
    return lambda row: (row[key], None)


def _pair(a: str, b: str) -> Callable[[Mapping[str, Any]], tuple[str, str | None]]:
    return lambda row: (row[a], row[b])


def _multirc(row: Mapping[str, Any]) -> tuple[str, str | None]:
    return row["paragraph"], f"{row['question']} {row['answer']}"


def _wsc(row: Mapping[str, Any]) -> tuple[str, str | None]:
    return row["text"], f'Does "{row["span2_text"]}" refer to "{row["span1_text"]}"?'


@dataclass(frozen=True)
class TaskSpec:
    name: str
    fields: tuple[str, ...]  # the text fields a row must have (besides label)
    segments: Callable[[Mapping[str, Any]], tuple[str, str | None]]
    n_classes: int = 2
    primary: str = "acc"
    trained_as: str | None = None  # evaluated with the model fine-tuned on this task


TASKS: dict[str, TaskSpec] = {t.name: t for t in (
    TaskSpec("boolq", ("question", "passage"), _pair("question", "passage")),
    TaskSpec("cola", ("sentence",), _single("sentence"), primary="mcc"),
    TaskSpec("mnli", ("premise", "hypothesis"), _pair("premise", "hypothesis"), n_classes=3),
    TaskSpec("mnli-mm", ("premise", "hypothesis"), _pair("premise", "hypothesis"), n_classes=3,
             trained_as="mnli"),
    TaskSpec("mrpc", ("sentence1", "sentence2"), _pair("sentence1", "sentence2"), primary="f1"),
    TaskSpec("multirc", ("paragraph", "question", "answer"), _multirc),
    TaskSpec("qnli", ("question", "sentence"), _pair("question", "sentence")),
    TaskSpec("qqp", ("question1", "question2"), _pair("question1", "question2"), primary="f1"),
    TaskSpec("rte", ("sentence1", "sentence2"), _pair("sentence1", "sentence2")),
    TaskSpec("sst2", ("sentence",), _single("sentence")),
    TaskSpec("wsc", ("text", "span1_text", "span2_text"), _wsc),
)}


def train_candidates(task: str) -> tuple[str, ...]:
    """Where a task's training file may be, in order of preference (relative to the root)."""
    return (f"{DIR}/{task}.train.jsonl", f"{DIR}/{task}.train.jsonl.xz",
            f"{EXTRA_DIR}/{task}.train.jsonl")


def valid_path(task: str) -> str:
    return f"{DIR}/{task}.valid.jsonl"


def parse_tasks(value: Any) -> tuple[str, ...]:
    """All tasks (``None``), or a subset given as a list or a comma-separated string, in the
    suite's order; an unknown name is an error."""
    if value is None:
        return tuple(TASKS)
    names = value.split(",") if isinstance(value, str) else value
    try:
        names = [str(n).strip() for n in names]
    except TypeError:
        raise MinidmlError(f"glue option tasks={value!r}: give a list of task names") from None
    names = [n for n in names if n]
    unknown = [n for n in names if n not in TASKS]
    if unknown:
        raise MinidmlError(f"glue option tasks: unknown task(s) {', '.join(unknown)}; "
                           f"choose from {', '.join(TASKS)}")
    if not names:
        raise MinidmlError(f"glue option tasks: no task given; choose from {', '.join(TASKS)}")
    return tuple(t for t in TASKS if t in names)


# ----------------------------------------------------------------------------- metrics
def _counts(pred: torch.Tensor, gold: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """tp, fp, fn, tn (float64) over the last dimension of 0/1 predictions and labels."""
    p, g = pred.bool(), gold.bool()
    return tuple(x.sum(-1).double() for x in (p & g, p & ~g, ~p & g, ~p & ~g))


def _mcc(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor
         ) -> torch.Tensor:
    den = ((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)).sqrt()
    return torch.where(den > 0, (tp * tn - fp * fn) / den.clamp_min(1e-300),
                       torch.zeros_like(den))


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor, tn: torch.Tensor
        ) -> torch.Tensor:
    den = 2 * tp + fp + fn
    return torch.where(den > 0, 2 * tp / den.clamp_min(1), torch.zeros_like(den))


def mcc(pred: Sequence[int] | torch.Tensor, gold: Sequence[int] | torch.Tensor) -> float:
    """Matthews correlation of binary predictions; 0 when any marginal is empty (e.g. every
    prediction, or every label, is one class), as scikit-learn defines it."""
    return float(_mcc(*_counts(torch.as_tensor(pred), torch.as_tensor(gold))))


def f1(pred: Sequence[int] | torch.Tensor, gold: Sequence[int] | torch.Tensor) -> float:
    """F1 of the positive class (1); 0 when there are no true and no predicted positives."""
    return float(_f1(*_counts(torch.as_tensor(pred), torch.as_tensor(gold))))


_BINARY = {"mcc": _mcc, "f1": _f1}


def task_metrics(spec: TaskSpec, pred: torch.Tensor, gold: torch.Tensor,
                 seed: int = 0) -> dict[str, float]:
    """``acc``/``acc_stderr`` and, for cola / mrpc / qqp, the primary metric with a seeded
    bootstrap stderr."""
    metrics = accuracy((pred == gold).double())
    if spec.primary in _BINARY:
        fn = _BINARY[spec.primary]
        metrics[spec.primary] = float(fn(*_counts(pred, gold)))
        metrics[f"{spec.primary}_stderr"] = _bootstrap_stderr(fn, pred, gold, seed)
    return metrics


def _bootstrap_stderr(fn: Callable[..., torch.Tensor], pred: torch.Tensor, gold: torch.Tensor,
                      seed: int) -> float:
    n = pred.numel()
    if n < 2:
        return float("nan")
    gen = torch.Generator().manual_seed(seed)
    values = []
    chunk = max(1, min(BOOTSTRAP_RESAMPLES, 2_000_000 // n))
    for start in range(0, BOOTSTRAP_RESAMPLES, chunk):
        rows = min(chunk, BOOTSTRAP_RESAMPLES - start)
        idx = torch.randint(n, (rows, n), generator=gen)
        values.append(fn(*_counts(pred[idx], gold[idx])))
    return float(torch.cat(values).std(correction=1))


def primary_score(spec: TaskSpec, pred: torch.Tensor, gold: torch.Tensor) -> float:
    """The primary metric alone (no stderr): what early stopping compares."""
    if spec.primary in _BINARY:
        return float(_BINARY[spec.primary](*_counts(pred, gold)))
    return float((pred == gold).double().mean())
