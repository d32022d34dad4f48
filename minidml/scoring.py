"""Sequence log-probabilities: the one computation every minimal-pair suite needs.

The rule is lm-evaluation-harness's, which the BabyLM 2024 pipeline runs: a multiple-choice
request is a (context, continuation) pair whose continuation is the target delimiter (one
space) followed by the text, and its score is the sum of the log-probabilities of the
continuation's tokens, with no length normalisation:

- **no context** (BLiMP, the supplement): the BOS token, then the tokens of ``" " + text``;
  every token after BOS is scored;
- **a context** (EWoK): the tokens of ``context + " " + text`` encoded together, after BOS;
  the scored tokens are those beyond the tokens of ``context`` encoded alone (trailing
  spaces of the context move to the continuation first). Joint tokenisation, as the harness
  does it: a piece that straddles the boundary belongs to the continuation.

:func:`request_ids` is that rule and the only place it is written; ``delimiter=""`` scores
texts as given. Texts are scored in length-sorted batches, right-padded with a mask;
log-softmax runs in float32 whatever the model computes in (``precision="bf16"`` runs the
model under bfloat16 autocast: scores within a few percent). The ω-weighted ensemble scores
each token by the log of the mixture of the students' probabilities, log Σ_i ω_i p_i(y).

A text longer than the students' context keeps its last ``context`` positions: the tokens
that fall off the front are neither seen nor scored (the harness cuts from the left too).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .losses import mixture_log_probs


class LanguageModel(Protocol):
    """What scoring and the suites use of a model: a minidml :class:`~minidml.Student`, or a
    Hugging Face causal LM wrapped by :class:`minidml.hf_models.HFModel`."""

    config: Any  # .context, .d_model, .vocab_size, .n_params and .shape (for reports)

    def __call__(self, ids: torch.Tensor) -> torch.Tensor: ...  # logits [B, T, V]
    def trunk(self, ids: torch.Tensor) -> torch.Tensor: ...  # final hidden states [B, T, d]
    def parameters(self) -> Iterator[torch.nn.Parameter]: ...
    def eval(self) -> Any: ...


class TextTokenizer(Protocol):
    """What scoring and the suites use of a tokenizer (:class:`minidml.Tokenizer` or
    :class:`minidml.hf_models.HFTokenizer`): ``bos_id`` is the prefix texts are scored
    after."""

    bos_id: int
    eos_id: int
    pad_id: int

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...


ENSEMBLE = "ensemble"
TARGET_DELIMITER = " "  # lm-evaluation-harness's default target_delimiter


def request_ids(tokenizer: TextTokenizer, texts: Sequence[str],
                contexts: Sequence[str] | None = None, delimiter: str = TARGET_DELIMITER
                ) -> list[tuple[list[int], int]]:
    """(token ids starting with BOS, number of leading ids that are not scored) per text,
    as lm-evaluation-harness builds a loglikelihood request (see the module docstring)."""
    texts = list(texts)
    if contexts is None or not any(contexts):
        contexts = [""] * len(texts)
    if len(contexts) != len(texts):
        raise ValueError(f"{len(contexts)} contexts for {len(texts)} texts")
    bos = tokenizer.bos_id  # the prefix: minidml's BOS, or a Hugging Face model's
    out: list[tuple[list[int], int]] = [([], 0)] * len(texts)
    plain = [i for i, c in enumerate(contexts) if not c]
    for i, ids in zip(plain, tokenizer.encode_batch([delimiter + texts[i] for i in plain]),
                      strict=True):
        out[i] = ([bos, *ids], 1)
    joint = [i for i, c in enumerate(contexts) if c]
    if joint:
        heads, tails = [], []
        for i in joint:
            c = contexts[i]
            head = c.rstrip()  # trailing spaces join the continuation
            heads.append(head)
            tails.append(c[len(head):] + delimiter + texts[i])
        whole = tokenizer.encode_batch([h + t for h, t in zip(heads, tails, strict=True)])
        alone = tokenizer.encode_batch(heads)
        for i, w, a in zip(joint, whole, alone, strict=True):
            out[i] = ([bos, *a, *w[len(a):]], 1 + len(a))
    return out


def student_label(index: int) -> str:
    return f"student-{index}"


class Scorer:
    """Scores texts under some students and, optionally, their ω-weighted ensemble.

    ``students``: the models (all of them: the ensemble needs every one); ``labels`` picks
    what to report, any of ``student-<i>`` and ``ensemble`` (default: all of them).
    """

    def __init__(self, students: Sequence[LanguageModel], tokenizer: TextTokenizer,
                 omega: torch.Tensor | None = None, *, labels: Sequence[str] | None = None,
                 batch_size: int = 64, precision: str = "fp32", progress: bool = False):
        if batch_size < 1:
            raise ValueError(f"batch size {batch_size}: must be at least 1")
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision {precision!r}: choose fp32 or bf16")
        self.precision = precision
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
               delimiter: str = TARGET_DELIMITER) -> list[tuple[list[int], int]]:
        """(token ids starting with BOS, number of leading ids not scored) per text:
        :func:`request_ids` with this scorer's tokenizer."""
        return request_ids(self.tokenizer, texts, contexts, delimiter)

    def score(self, texts: Sequence[str], contexts: Sequence[str] | None = None,
              delimiter: str = TARGET_DELIMITER) -> dict[str, torch.Tensor]:
        """{label: float64 [len(texts)]} summed log-probabilities of ``delimiter + text``
        after BOS and the context (see the module docstring)."""
        return self.score_ids(self.encode(texts, contexts, delimiter))

    @torch.inference_mode()
    def score_ids(self, items: Sequence[tuple[Sequence[int], int]]) -> dict[str, torch.Tensor]:
        """Like :meth:`score`, for pre-tokenised (ids, n_unscored) items."""
        n = len(items)
        out = {lb: torch.zeros(n, dtype=torch.float64) for lb in self.labels}
        if n == 0:
            return out
        for s in self.students:
            s.eval()
        wanted = [int(lb.rsplit("-", 1)[1]) for lb in self.labels if lb != ENSEMBLE]
        needed = range(len(self.students)) if ENSEMBLE in self.labels else wanted
        order = sorted(range(n), key=lambda i: -len(items[i][0]))
        batches = [order[b:b + self.batch_size] for b in range(0, n, self.batch_size)]
        bar = tqdm(total=n, desc="scoring", unit="text", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        for batch in batches:
            bar.update(len(batch))
            x, y, mask = self._pad([items[i] for i in batch])
            if x.shape[1] == 0:  # only BOS: nothing to score
                continue
            with torch.autocast(self.device.type, torch.bfloat16,
                                enabled=self.precision == "bf16"):
                logits = {i: self.students[i](x) for i in needed}
            logp = {i: -F.cross_entropy(z.flatten(0, 1).float(), y.flatten(),
                                        reduction="none").view_as(y)
                    for i, z in logits.items()}
            sums = {student_label(i): (logp[i] * mask).sum(1) for i in wanted}
            if ENSEMBLE in self.labels:
                mix = mixture_log_probs(torch.stack([logp[i] for i in needed]),
                                        self.omega.to(self.device))
                sums[ENSEMBLE] = (mix * mask).sum(1)
            idx = torch.tensor(batch)
            for lb, v in sums.items():
                out[lb][idx] = v.double().cpu()
        bar.close()
        return out

    def _pad(self, items: Sequence[tuple[Sequence[int], int]]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs, next-token targets and the mask of scored positions, right-padded."""
        rows = []
        for ids, skip in items:
            ids = list(ids)
            drop = max(0, len(ids) - 1 - self.context)  # keep the last `context` positions
            rows.append((ids[drop:], max(skip - drop, 1)))
        width = max(len(ids) - 1 for ids, _ in rows)
        x = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        y = torch.zeros_like(x)
        mask = torch.zeros(x.shape, dtype=torch.float32)
        for r, (ids, skip) in enumerate(rows):
            t = torch.tensor(ids)
            x[r, :len(ids) - 1] = t[:-1]
            y[r, :len(ids) - 1] = t[1:]
            mask[r, skip - 1:len(ids) - 1] = 1.0  # position p predicts token p + 1
        return x.to(self.device), y.to(self.device), mask.to(self.device)
