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

import functools
from collections.abc import Callable, Iterator, Sequence
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


class CachingModel(LanguageModel, Protocol):
    """A model that also runs a prefix once for the texts that share it and has its head
    apart (a minidml :class:`~minidml.Student`): what :meth:`Scorer.score_ids` uses where
    every model has ``prefix_cache``, ``trunk_after`` and ``head``."""

    def head(self, hidden: torch.Tensor) -> torch.Tensor: ...  # logits of hidden states
    # every layer's keys and values [B, H, T, head_dim] of the prefixes ids [B, T]
    def prefix_cache(self, ids: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]: ...
    # final hidden states of ids [B, T] that continue row b's first start[b] cached positions
    def trunk_after(self, ids: torch.Tensor, cache: list[tuple[torch.Tensor, torch.Tensor]],
                    start: torch.Tensor) -> torch.Tensor: ...


ENSEMBLE = "ensemble"
# texts that begin with this many unscored tokens in common run them once (Scorer.score_ids);
# below it, the second pass and the copies of the prefix's keys and values cost about what
# they save
SHARED_PREFIX = 32


def student_label(index: int) -> str:
    return f"student-{index}"


class Scorer:
    """Scores texts under some students and, optionally, their ω-weighted ensemble.

    ``students``: the models (all of them: the ensemble needs every one); ``labels`` picks
    what to report, any of ``student-<i>`` and ``ensemble`` (default: all of them);
    ``protocol`` which tokens count (:mod:`minidml.evaluation.protocols`); texts that begin
    with ``shared_prefix`` or more unscored tokens in common run them once (None: every text
    whole; see :meth:`score_ids`).
    """

    def __init__(self, students: Sequence[LanguageModel], tokenizer: TextTokenizer,
                 omega: torch.Tensor | None = None, *, labels: Sequence[str] | None = None,
                 batch_size: int = 64, precision: str = "fp32", progress: bool = False,
                 protocol: str | ScoringProtocol = DEFAULT_PROTOCOL,
                 shared_prefix: int | None = SHARED_PREFIX):
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
        if shared_prefix is not None and shared_prefix < 1:
            raise ValueError(f"shared prefix {shared_prefix}: must be at least 1, or None")
        self.shared_prefix = shared_prefix
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
        skip, stop)`` tuples), or (ids, n_unscored) pairs whose scored tokens run to the end.

        Texts whose first ``shared_prefix`` or more tokens are the same and unscored (an
        entity-tracking item's options after their long prefix) run those tokens once, and
        each text's own tokens after them (:meth:`minidml.Student.trunk_after`): the same
        scores, for a fraction of the work."""
        requests = [Request(list(it[0]), it[1], it[2] if len(it) == 3 else len(it[0]))
                    for it in items]
        n = len(requests)
        out = {lb: torch.zeros(n, dtype=torch.float64) for lb in self.labels}
        if n == 0:
            return out
        for s in self.students:
            s.eval()
        wanted = [int(lb.rsplit("-", 1)[1]) for lb in self.labels if lb != ENSEMBLE]
        needed = range(len(self.students)) if ENSEMBLE in self.labels else wanted
        models = [self.students[i] for i in needed]
        bar = tqdm(total=n, desc="scoring", unit="text", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        for batch, y, at, cols, scored_logits in self._batches(requests, models):
            bar.update(len(batch))
            if at.numel() == 0:  # only BOS: nothing to score
                continue
            with self._autocast():
                rows, cols = at.to(self.device), cols.to(self.device)
                logits = [scored_logits(m, rows, cols) for m in models]
            self._add(out, batch, at, logits, y[rows, cols], needed, wanted)
        bar.close()
        return out

    def _batches(self, items: Sequence[Request], models: Sequence[LanguageModel]
                 ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor,
                                     Callable[..., torch.Tensor]]]:
        """The texts in batches: each batch's texts (indices into ``items``), its targets,
        the (row, column) of its scored positions (on the host), and a function of (model,
        rows, columns) giving that model's logits [N, V] there. Texts run whole come first,
        longest first; then the groups sharing a prefix (:meth:`_shared_prefixes`)."""
        alone, groups = self._shared_prefixes(items, models)
        alone.sort(key=lambda i: -len(items[i].ids))
        for b in range(0, len(alone), self.batch_size):
            batch = alone[b:b + self.batch_size]
            x, y, at, cols = self._pad([items[i] for i in batch])
            yield batch, y, at, cols, functools.partial(self._scored_logits, x=x)
        for chunk in self._chunks(groups):
            batch = [i for _, members in chunk for i in members]
            prefix, x, y, at, cols, start, of = self._pad_shared(items, chunk)
            yield batch, y, at, cols, functools.partial(
                self._logits_after, prefix=prefix, of=of, x=x, start=start)

    def _autocast(self) -> torch.autocast:
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.precision == "bf16")

    def _add(self, out: dict[str, torch.Tensor], batch: Sequence[int], at: torch.Tensor,
             logits: Sequence[torch.Tensor], targets: torch.Tensor, needed: Sequence[int],
             wanted: Sequence[int]) -> None:
        """Each text's summed log-probabilities into ``out``: ``logits`` [N, V] of every
        needed model at the scored positions, ``at`` [N] the text (row of ``batch``) of each."""
        logp = dict(zip(needed, target_log_probs(logits, targets), strict=True))
        per_token = {student_label(i): logp[i] for i in wanted}
        if ENSEMBLE in self.labels:
            per_token[ENSEMBLE] = mixture_log_probs(torch.stack([logp[i] for i in needed]),
                                                    self.omega.to(self.device))
        idx = torch.tensor(batch)  # each text's sum in float64 on the host (MPS has none)
        for lb, v in per_token.items():
            out[lb][idx] = torch.zeros(len(batch), dtype=torch.float64).index_add(
                0, at, v.cpu().double())

    def _shared_prefixes(self, items: Sequence[Request], models: Sequence[LanguageModel]
                         ) -> tuple[list[int], list[tuple[int, list[int]]]]:
        """The texts scored alone, and groups ``(S, members)`` of texts whose first S tokens
        (S ≥ ``shared_prefix``) are the same and unscored, found among the texts sorted by
        their tokens. Only models that continue a cache (minidml students) share, and only
        texts run whole (none cut to the context)."""
        least = self.shared_prefix
        if least is None or not all(hasattr(m, a) for m in models
                                    for a in ("prefix_cache", "trunk_after", "head")):
            return list(range(len(items))), []

        def room(it: Request) -> int:  # tokens before the first scored position
            whole = not self.protocol.truncate or len(it.ids) - 1 <= self.context
            return it.skip - 1 if whole and it.stop > it.skip else 0

        rooms = [room(it) for it in items]
        alone = [i for i, r in enumerate(rooms) if r < least]  # a minimal pair's sentences
        groups: list[tuple[int, list[int]]] = []

        def close(shared: int, members: list[int]) -> None:
            if len(members) > 1 and shared >= least:
                groups.append((shared, members))
            else:
                alone.extend(members)

        members: list[int] = []
        shared = 0
        for i in sorted((i for i, r in enumerate(rooms) if r >= least),
                        key=lambda i: items[i].ids):
            if members:
                common = min(shared, rooms[i],
                             _common_prefix(items[members[-1]].ids, items[i].ids))
                if common >= least:
                    members.append(i)
                    shared = common
                    continue
                close(shared, members)
            members, shared = [i], rooms[i]
        if members:
            close(shared, members)
        return alone, groups

    def _chunks(self, groups: Sequence[tuple[int, list[int]]]
                ) -> Iterator[list[tuple[int, list[int]]]]:
        """Groups in batches of at most ``batch_size`` texts, longest prefixes first; a
        larger group is split."""
        pieces = [(shared, members[b:b + self.batch_size])
                  for shared, members in sorted(groups, key=lambda g: -g[0])
                  for b in range(0, len(members), self.batch_size)]
        chunk: list[tuple[int, list[int]]] = []
        for piece in pieces:
            if chunk and sum(len(m) for _, m in chunk) + len(piece[1]) > self.batch_size:
                yield chunk
                chunk = []
            chunk.append(piece)
        if chunk:
            yield chunk

    @staticmethod
    def _scored_logits(model: LanguageModel, rows: torch.Tensor, cols: torch.Tensor, *,
                       x: torch.Tensor) -> torch.Tensor:
        """Logits [N, V] of inputs ``x`` at the scored positions only: a model with a
        ``head`` (a minidml student) applies it to those positions' hidden states, so a long
        unscored context costs the trunk and no more; any other model's full logits are
        indexed."""
        head = getattr(model, "head", None)
        if head is None:
            return model(x)[rows, cols]
        return head(model.trunk(x)[rows, cols])

    @staticmethod
    def _logits_after(model: CachingModel, rows: torch.Tensor, cols: torch.Tensor, *,
                      prefix: torch.Tensor, of: torch.Tensor, x: torch.Tensor,
                      start: torch.Tensor) -> torch.Tensor:
        """:meth:`_scored_logits` of texts that each continue a row ``of`` of ``prefix``
        (:meth:`_pad_shared`), the prefixes run once: only texts of models that continue a
        cache share a prefix (:meth:`_shared_prefixes`)."""
        cache = [(k[of], v[of]) for k, v in model.prefix_cache(prefix)]
        return model.head(model.trunk_after(x, cache, start)[rows, cols])

    def _pad_shared(self, items: Sequence[Request], chunk: Sequence[tuple[int, list[int]]]
                    ) -> tuple[torch.Tensor, ...]:
        """:meth:`_pad` for groups of texts that share their first S tokens: the prefixes
        [G, max S] (right-padded), each text's own inputs and targets after its prefix, the
        scored (row, column) there, each row's S and its group."""
        prefix = torch.full((len(chunk), max(shared for shared, _ in chunk)),
                            self.tokenizer.pad_id, dtype=torch.long)
        own, start, of = [], [], []
        for g, (shared, members) in enumerate(chunk):
            prefix[g, :shared] = torch.tensor(items[members[0]].ids[:shared])
            for i in members:
                ids, skip, stop = items[i]
                own.append(Request(ids[shared:], skip - shared, stop - shared))
                start.append(shared)
                of.append(g)
        x, y, at, cols = self._pad(own)  # a row's first own token is input only, as BOS is
        return (prefix.to(self.device), x, y, at, cols,
                torch.tensor(start, device=self.device), torch.tensor(of, device=self.device))

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
        # a text of one token or none (an empty one, where a tokenizer adds no BOS) has no
        # position to predict from: nothing of it is scored, its score is 0
        width = max(1, *(len(ids) - 1 for ids, _, _ in rows))
        x = torch.full((len(rows), width), self.tokenizer.pad_id, dtype=torch.long)
        y = torch.zeros_like(x)
        at_row: list[int] = []
        at_col: list[int] = []
        for r, (ids, skip, stop) in enumerate(rows):
            n = max(0, len(ids) - 1)
            t = torch.tensor(ids, dtype=torch.long)
            x[r, :n] = t[:n]
            y[r, :n] = t[1:n + 1]
            scored = range(skip - 1, min(stop - 1, n))
            at_row += [r] * len(scored)
            at_col += scored
        return (x.to(self.device), y.to(self.device), torch.tensor(at_row, dtype=torch.long),
                torch.tensor(at_col, dtype=torch.long))


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """How many first tokens ``a`` and ``b`` have in common."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
