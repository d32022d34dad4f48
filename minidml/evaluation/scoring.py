"""Sequence log-probabilities: the one computation every zero-shot suite needs.

Which tokens of a text are scored is the protocol's choice (:mod:`minidml.evaluation.protocols`: the
official BabyLM 2026 rule by default, or lm-evaluation-harness's); the scorer sums their
log-probabilities, with no length normalisation. Texts are scored in length-sorted batches,
right-padded with a mask; log-softmax runs in float32 whatever the model computes in
(``precision="bf16"`` runs the model under bfloat16 autocast: scores within a few percent).
The ω-weighted ensemble scores each token by the log of the mixture of the students'
probabilities, log Σ_i ω_i p_i(y).

Under ``lm-eval`` a text longer than the students' context keeps its last ``context``
positions (the harness cuts from the left too); under ``babylm-2026`` it is run whole, as the
official pipeline runs the exported model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm

from ..losses import mixture_log_probs, target_log_probs
from .protocols import DEFAULT_PROTOCOL, Request, ScoringProtocol, TextTokenizer, get_protocol


class LanguageModel(Protocol):
    """What scoring and the suites use of a model: a minidml :class:`~minidml.Student`, or a
    Hugging Face causal LM wrapped by :class:`minidml.hf.models.HFModel`. A model that also
    has ``head(hidden) -> logits`` (a student) is scored through it at the scored positions
    only."""

    config: Any  # .context, .d_model, .vocab_size, .n_params and .shape (for reports)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor: ...  # logits [B, T, V]
    def trunk(self, ids: torch.Tensor) -> torch.Tensor: ...  # final hidden states [B, T, d]
    def parameters(self) -> Iterator[torch.nn.Parameter]: ...
    def eval(self) -> Any: ...


ENSEMBLE = "ensemble"


def student_label(index: int) -> str:
    return f"student-{index}"


class Scorer:
    """Scores texts under some students and, optionally, their ω-weighted ensemble.

    ``students``: the models (all of them: the ensemble needs every one); ``labels`` picks
    what to report, any of ``student-<i>`` and ``ensemble`` (default: all of them);
    ``protocol`` which tokens count (:mod:`minidml.evaluation.protocols`).
    """

    def __init__(self, students: Sequence[LanguageModel], tokenizer: TextTokenizer,
                 omega: torch.Tensor | None = None, *, labels: Sequence[str] | None = None,
                 batch_size: int = 64, precision: str = "fp32", progress: bool = False,
                 protocol: str | ScoringProtocol = DEFAULT_PROTOCOL):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be at least 1")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {precision!r}: choose fp32 or bf16")
        self.precision = precision
        self.protocol = get_protocol(protocol)
        self.students = list(students)
        self.tokenizer = tokenizer
        k = len(self.students)
        self.omega = (torch.full((k,), 1.0 / k) if omega is None else omega.detach()).float()
        names = [student_label(i) for i in range(k)] + ([ENSEMBLE] if k > 1 else [])
        self.labels = list(names if labels is None else labels)
        unknown = [lb for lb in self.labels if lb not in names]
        if unknown:
            raise ValueError(f"unknown model label(s) {unknown}; choose from {names}")
        self.batch_size = batch_size
        self.progress = progress
        self.context = min(s.config.context for s in self.students)
        self.device = next(self.students[0].parameters()).device

    def encode(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
               joins: Sequence[str] | None = None) -> list[Request]:
        """The :class:`~minidml.evaluation.protocols.Request` of each ``context + join +
        text`` under this scorer's protocol and tokenizer (no context: the text alone; ``join``
        defaults
        to one space)."""
        return self.protocol.requests(self.tokenizer, texts, contexts, joins)

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
              joins: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
        """{label: float64 [len(texts)]} summed log-probabilities of each text's scored
        tokens (see :meth:`encode`)."""
        return self.score_ids(self.encode(texts, contexts, joins))

    @torch.inference_mode()
    def score_ids(self, items: Sequence[Request | tuple[Sequence[int], int]]
                  ) -> dict[str, torch.Tensor]:
        """Like :meth:`score`, for pre-tokenised items: :class:`Request` s (or plain ``(ids,
        skip, stop)`` tuples), or (ids, n_unscored) pairs whose scored tokens run to the end."""
        items = [Request(list(it[0]), it[1], it[2] if len(it) == 3 else len(it[0]))
                 for it in items]
        n = len(items)
        out = {lb: torch.zeros(n, dtype=torch.float64) for lb in self.labels}
        if n == 0:
            return out
        for s in self.students:
            s.eval()
        wanted = [int(lb.rsplit("-", 1)[1]) for lb in self.labels if lb != ENSEMBLE]
        needed = range(len(self.students)) if ENSEMBLE in self.labels else wanted
        order = sorted(range(n), key=lambda i: -len(items[i].ids))
        batches = [order[b:b + self.batch_size] for b in range(0, n, self.batch_size)]
        bar = tqdm(total=n, desc="scoring", unit="text", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        for batch in batches:
            bar.update(len(batch))
            x, y, at, cols = self._pad([items[i] for i in batch])
            if at.numel() == 0:  # only BOS: nothing to score
                continue
            with torch.autocast(self.device.type, torch.bfloat16,
                                enabled=self.precision == "bf16"):
                rows, cols = at.to(self.device), cols.to(self.device)
                logits = [self._scored_logits(self.students[i], x, rows, cols) for i in needed]
            logp = dict(zip(needed, target_log_probs(logits, y[rows, cols]), strict=True))
            per_token = {student_label(i): logp[i] for i in wanted}
            if ENSEMBLE in self.labels:
                per_token[ENSEMBLE] = mixture_log_probs(torch.stack([logp[i] for i in needed]),
                                                        self.omega.to(self.device))
            idx = torch.tensor(batch)  # each text's sum in float64 on the host (MPS has none)
            for lb, v in per_token.items():
                out[lb][idx] = torch.zeros(len(batch), dtype=torch.float64).index_add(
                    0, at, v.cpu().double())
        bar.close()
        return out

    @staticmethod
    def _scored_logits(model: LanguageModel, x: torch.Tensor, rows: torch.Tensor,
                       cols: torch.Tensor) -> torch.Tensor:
        """Logits [N, V] at the scored positions only: a model with a ``head`` (a minidml
        student) applies it to those positions' hidden states, so a long unscored context
        costs the trunk and no more; any other model's full logits are indexed."""
        head = getattr(model, "head", None)
        if head is None:
            return model(x)[rows, cols]
        return head(model.trunk(x)[rows, cols])

    def _pad(self, items: Sequence[Request]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs and next-token targets, right-padded, and the (row, column) of every scored
        position (position p predicts token p + 1), kept on the host: the caller moves them to
        the device, and sums each text's scores by them on the host."""
        rows = []
        for ids, skip, stop in items:
            ids = list(ids)
            drop = max(0, len(ids) - 1 - self.context) if self.protocol.truncate else 0
            rows.append((ids[drop:], max(skip - drop, 1), max(stop - drop, 1)))
        width = max(len(ids) - 1 for ids, _, _ in rows)
        x = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        y = torch.zeros_like(x)
        at_row, at_col = [], []
        for r, (ids, skip, stop) in enumerate(rows):
            t = torch.tensor(ids, dtype=torch.long)
            x[r, :len(ids) - 1] = t[:-1]
            y[r, :len(ids) - 1] = t[1:]
            scored = range(skip - 1, stop - 1)
            at_row += [r] * len(scored)
            at_col += scored
        return (x.to(self.device), y.to(self.device), torch.tensor(at_row, dtype=torch.long),
                torch.tensor(at_col, dtype=torch.long))
