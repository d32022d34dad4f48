"""Sequence scoring against a plain one-sentence loop, the harness's request rule, and the
minimal-pair rules."""

from __future__ import annotations

import math

import pytest
import torch

from minidml import Student, StudentConfig, Tokenizer
from minidml.demo.grammar import sentences
from minidml.errors import MinidmlError
from minidml.evaluation.protocols import PROTOCOLS
from minidml.evaluation.scoring import Scorer
from minidml.evaluation.suite import (
    Choices,
    EvalContext,
    Pair,
    accuracy,
    read_jsonl,
    score_choices,
    score_pairs,
    spearman,
)

LINES = list(sentences(400, seed=3))

def request_ids(tokenizer, texts, contexts=None, delimiter=" "):
    """(ids, number not scored) of each text by lm-evaluation-harness's rule."""
    joins = None if contexts is None else [delimiter] * len(texts)
    return [(r.ids, r.skip) for r in PROTOCOLS["lm-eval"].requests(tokenizer, texts,
                                                                    contexts, joins)]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    tok = Tokenizer.train(LINES, vocab_size=300)
    return tok


def models(tokenizer, context=96, k=2):
    torch.manual_seed(0)
    out = []
    for n, d in [(2, 32), (1, 48), (1, 32)][:k]:
        m = Student(StudentConfig(vocab_size=tokenizer.vocab_size, n_layers=n, d_model=d,
                                  n_heads=2, context=context))
        with torch.no_grad():  # break the symmetric initialisation so scores differ
            for p in m.parameters():
                p.add_(0.05 * torch.randn_like(p))
        out.append(m.eval())
    return out


def reference(model, ids: list[int], skip: int) -> float:
    """log p of ids[skip:] given ids[:skip], one sequence, float64 log-softmax."""
    if len(ids) < 2:
        return 0.0
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]])).double(), -1)[0]
    return sum(float(logp[p, ids[p + 1]]) for p in range(skip - 1, len(ids) - 1))


def test_scores_equal_a_one_sentence_reference_at_any_batch_size(tokenizer):
    students = models(tokenizer)
    texts = LINES[:40] + ["", "a", "The dogs near the cat sleep ."]
    for bs in (1, 7, 64):
        got = Scorer(students, tokenizer, batch_size=bs, protocol="lm-eval").score(texts)
        for i, s in enumerate(students):
            want = [reference(s, [Tokenizer.bos_id, *tokenizer.encode(" " + t)], 1)
                    for t in texts]
            torch.testing.assert_close(got[f"student-{i}"], torch.tensor(want,
                                       dtype=torch.float64), rtol=0, atol=1e-4)
    assert got["student-0"][texts.index("")] < 0  # the delimiter's own piece is scored
    raw = Scorer(students, tokenizer, protocol="babylm-2026").score(texts)["student-0"]
    want = [reference(students[0], [Tokenizer.bos_id, *tokenizer.encode(t)], 1) for t in texts]
    torch.testing.assert_close(raw, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-4)
    assert raw[texts.index("")] == 0.0  # nothing to score


def test_a_text_with_no_position_to_predict_from_scores_zero(tokenizer):
    """A tokenizer without BOS encodes an empty text as no tokens, and a one-token text has
    nothing before its token: alone or beside others, nothing is scored (0), as the official
    pipeline counts it, and the others' scores are unchanged."""
    students = models(tokenizer)
    scorer = Scorer(students, tokenizer, shared_prefix=None)
    ids = [Tokenizer.bos_id, *tokenizer.encode("the dog sleeps .")]
    whole = scorer.score_ids([(ids, 1, len(ids))])
    for items in ([([], 0, 0)], [([7], 0, 1)], [([], 0, 0), (ids, 1, len(ids)), ([7], 0, 1)]):
        got = scorer.score_ids(items)
        for label, scores in got.items():
            assert [float(v) for k, v in enumerate(scores) if len(items[k][0]) < 2] == [0.0] * (
                sum(len(it[0]) < 2 for it in items))
            if len(items) == 3:
                assert float(scores[1]) == pytest.approx(float(whole[label][0]), abs=1e-5)


@pytest.mark.parametrize("boundary", ["prefix", "none"])
def test_a_sentence_s_first_word_under_both_protocols(boundary):
    """The harness scores ``" " + sentence`` after BOS, the 2026 pipeline the sentence as it
    is: with the word boundary both score the same pieces, ``▁The`` first, as in running
    text; without it the 2026 rule's first word is the line-initial ``The``."""
    tok = Tokenizer.train(LINES, vocab_size=300, boundary=boundary)
    (ids, skip), = request_ids(tok, ["The dog sleeps ."])
    assert skip == 1 and ids[0] == Tokenizer.bos_id
    assert ids[1:] == tok.encode(" The dog sleeps .")
    assert tok.id_to_piece(ids[1]).startswith("\u2581")
    official, = PROTOCOLS["babylm-2026"].requests(tok, ["The dog sleeps ."])
    assert official.skip == 1 and official.stop == len(official.ids)
    assert official.ids[1:] == tok.encode("The dog sleeps .")
    assert (official.ids == ids) == (boundary == "prefix")


def test_a_context_and_its_continuation_are_tokenised_together(tokenizer):
    enc = tokenizer.encode
    bos = Tokenizer.bos_id
    (ids, skip), = request_ids(tokenizer, ["the cats run ."], ["The dog sleeps ."])
    assert ids == [bos, *enc("The dog sleeps . the cats run .")]
    assert skip == 1 + len(enc("The dog sleeps ."))
    # trailing spaces of the context move into the continuation
    (ids, skip), = request_ids(tokenizer, ["cats"], ["The dog  "])
    assert ids == [bos, *enc("The dog   cats")] and skip == 1 + len(enc("The dog"))
    # a piece across the boundary belongs to the continuation, and the context keeps its own
    # tokens (the sequence the harness feeds the model is context_enc + whole[len(context):])
    words = sorted({p[1:] for p in map(tokenizer.id_to_piece, range(tokenizer.vocab_size))
                    if p.startswith("\u2581") and len(p) > 3}, key=len, reverse=True)
    ctx, text = next((f"The {w[:2]}", f"{w[2:]} sleep .") for w in words
                     if enc(f"The {w[:2]}") != enc(f"The {w} sleep .")[:len(enc(f"The {w[:2]}"))])
    whole, alone = enc(ctx + text), enc(ctx)
    assert whole[:len(alone)] != alone  # one piece of the joint text spans the split
    (ids, skip), = request_ids(tokenizer, [text], [ctx], delimiter="")
    assert ids == [bos, *alone, *whole[len(alone):]] and skip == 1 + len(alone)
    with pytest.raises(ValueError, match="2 contexts"):
        request_ids(tokenizer, ["a"], ["b", "c"])


def test_batch_sizes_1_and_64_agree_within_1e4(tokenizer):
    students = models(tokenizer, k=3)
    omega = torch.tensor([0.5, 0.3, 0.2])
    one = Scorer(students, tokenizer, omega, batch_size=1).score(LINES[:100])
    many = Scorer(students, tokenizer, omega, batch_size=64).score(LINES[:100])
    assert set(one) == {"student-0", "student-1", "student-2", "ensemble"}
    for label in one:
        assert (one[label] - many[label]).abs().max() < 1e-4, label


def test_ensemble_scores_the_mixture_of_probabilities(tokenizer):
    students = models(tokenizer, k=3)
    omega = torch.tensor([0.6, 0.4, 0.0])  # a zero weight contributes nothing
    text = LINES[5]
    ids = [Tokenizer.bos_id, *tokenizer.encode(" " + text)]
    with torch.no_grad():
        probs = [torch.softmax(s(torch.tensor([ids[:-1]])).double(), -1)[0] for s in students]
    mix = sum(w * p for w, p in zip(omega.double(), probs, strict=True))
    want = sum(math.log(float(mix[p, ids[p + 1]])) for p in range(len(ids) - 1))
    got = Scorer(students, tokenizer, omega).score([text])["ensemble"]
    assert float(got) == pytest.approx(want, abs=1e-4)
    assert float(got) > max(float(Scorer(students[:2], tokenizer).score([text])[f"student-{i}"])
                            for i in range(2)) - 1.0  # sanity: same scale as its members


def test_a_context_is_seen_but_not_scored(tokenizer):
    students = models(tokenizer, k=1)
    ctx, cont = "The dog sleeps .", "The cats run ."
    got = Scorer(students, tokenizer).score([cont], [ctx])["student-0"]
    c = tokenizer.encode(ctx)
    ids = [Tokenizer.bos_id, *tokenizer.encode(ctx + " " + cont)]
    assert float(got) == pytest.approx(reference(students[0], ids, 1 + len(c)), abs=1e-4)
    alone = Scorer(students, tokenizer).score([cont])["student-0"]
    assert float(got) != pytest.approx(float(alone), abs=1e-3)  # the context matters


def test_texts_longer_than_the_context_keep_their_last_positions_under_lm_eval(tokenizer):
    students = models(tokenizer, context=8, k=1)
    text = " ".join(LINES[:6])
    ids = [Tokenizer.bos_id, *tokenizer.encode(" " + text)]
    assert len(ids) > 20
    got = Scorer(students, tokenizer, protocol="lm-eval").score([text])["student-0"]
    kept = ids[-9:]
    with torch.no_grad():
        logp = torch.log_softmax(students[0](torch.tensor([kept[:-1]])).double(), -1)[0]
    want = sum(float(logp[p, kept[p + 1]]) for p in range(8))
    assert float(got) == pytest.approx(want, abs=1e-4)
    # the official pipeline runs the exported model on the whole text
    whole = Scorer(students, tokenizer, protocol="babylm-2026").score([text])["student-0"]
    assert float(whole) == pytest.approx(reference(students[0], ids, 1), abs=1e-3)


class LogitsOnly(torch.nn.Module):
    """A model with logits and a trunk but no ``head``, as a Hugging Face model is wrapped."""

    def __init__(self, student):
        super().__init__()
        self.student, self.config = student, student.config

    def forward(self, ids):
        return self.student(ids)

    def trunk(self, ids):
        return self.student.trunk(ids)


def test_the_head_runs_at_the_scored_positions_only(tokenizer):
    """A student's head sees the hidden states of the scored tokens and nothing else (a long
    context costs only the trunk); a model without a head is scored from its full logits,
    and both give the same scores."""
    students = models(tokenizer, k=2)
    texts, contexts = LINES[:30], LINES[30:60]
    seen = []
    head = students[0].head
    students[0].head = lambda h: seen.append(h.shape[0]) or head(h)
    try:
        fast = Scorer(students, tokenizer, batch_size=8).score(texts, contexts)
    finally:
        del students[0].head
    scored = sum(r.stop - r.skip for r in Scorer(students, tokenizer).encode(texts, contexts))
    assert sum(seen) == scored and len(seen) == 4  # one call per batch of 8
    full = Scorer([LogitsOnly(s) for s in students], tokenizer).score(texts, contexts)
    for label in fast:
        torch.testing.assert_close(fast[label], full[label], rtol=0, atol=1e-4)


@pytest.mark.parametrize("protocol", ["babylm-2026", "lm-eval"])
def test_texts_sharing_a_long_prefix_run_it_once_with_the_same_scores(tokenizer, protocol,
                                                                      monkeypatch):
    """Options after a long common prefix (as entity tracking's) run the prefix once per
    group, and score as each text alone does: against the one-sentence reference, with
    contexts past the students' context (run whole under babylm-2026; cut under lm-eval,
    and then not shared), short contexts scored alone, and the ensemble as without sharing."""
    students = models(tokenizer, context=96, k=2)
    texts, contexts = [], []
    for i, n in enumerate((1, 2, 4, 1, 1)):  # sentences of context: 4 run past 96 tokens
        context = " ".join(LINES[100 + 20 * i:100 + 20 * i + n])
        for option in LINES[200 + 5 * i:200 + 5 * i + 4]:
            texts.append(" ".join(option.split()[:3]))
            contexts.append(context)
    calls = []
    real = Student.prefix_cache
    monkeypatch.setattr(Student, "prefix_cache",
                        lambda self, ids: calls.append(ids.shape[0]) or real(self, ids))
    # the mechanism, at this test's sizes (SHARED_PREFIX is the default for real texts)
    scorer = Scorer(students, tokenizer, batch_size=8, protocol=protocol, shared_prefix=8)
    shared = scorer.score(texts, contexts)
    assert calls and sum(calls) < len(texts)  # prefixes run once for several texts
    for i, s in enumerate(students):
        want = []
        for r in scorer.encode(texts, contexts):
            ids, skip = r.ids, r.skip
            if scorer.protocol.truncate and len(ids) - 1 > s.config.context:  # cut as _pad
                drop = len(ids) - 1 - s.config.context
                ids, skip = ids[drop:], max(skip - drop, 1)
            want.append(reference(s, ids, skip))
        torch.testing.assert_close(shared[f"student-{i}"], torch.tensor(
            want, dtype=torch.float64), rtol=0, atol=1e-4)
    calls.clear()
    alone = Scorer(students, tokenizer, batch_size=8, protocol=protocol,
                   shared_prefix=None).score(texts, contexts)
    assert not calls
    torch.testing.assert_close(shared["ensemble"], alone["ensemble"], rtol=0, atol=1e-4)


def test_labels_choose_what_is_reported(tokenizer):
    students = models(tokenizer)
    got = Scorer(students, tokenizer, labels=["student-1"]).score(LINES[:3])
    assert set(got) == {"student-1"}
    with pytest.raises(ValueError, match="unknown model label"):
        Scorer(students, tokenizer, labels=["student-7"])
    assert Scorer(students, tokenizer).score([])["ensemble"].numel() == 0


def context_for(students, tokenizer, labels=None, limit=None):
    scorer = Scorer(students, tokenizer, labels=labels)
    return EvalContext(run=None, scorer=scorer, labels=scorer.labels, data_dir=None,
                       limit=limit, suite="pairs")


def test_a_tie_counts_as_correct_as_both_pipelines_count_it(tokenizer):
    students = models(tokenizer)
    ctx = context_for(students, tokenizer)
    same = [Pair(t, t) for t in LINES[:10]]
    result = score_pairs(ctx, {"ties": same})
    for label in ctx.labels:
        task = result.tasks[label]["ties"]
        assert task.metrics["acc"] == 1.0 and task.metrics["ties"] == 10 and task.n == 10
    assert result.notes == ["ties, counted correct as both pipelines count them: "
                            "student-0 10, student-1 10, ensemble 10 of 10 items"]
    assert [s.index for s in result.samples] == list(range(10))
    assert all(s.scores["ensemble"][0] == s.scores["ensemble"][1] for s in result.samples)
    apart = score_pairs(ctx, {"apart": [Pair("the dog runs .", "dog the runs .")]})
    assert apart.notes == [] and apart.samples[0].pair.good == "the dog runs ."


def test_multiple_choices_are_correct_when_no_other_scores_higher(tokenizer):
    """Entity tracking's rule: several options after one prefix, the first correct; it wins
    ties, and every option's tokens are scored after the prefix with nothing in between."""
    students = models(tokenizer)
    ctx = context_for(students, tokenizer)
    prefix = "The dog "
    options = ("sleeps .", "the cat .", "sleeps . dogs dogs dogs")
    item = Choices(options, (prefix,) * 3, "")
    result = score_choices(ctx, {"t": [item, Choices(("runs .",) * 3, (prefix,) * 3, "")]})
    want = ctx.scorer.score(list(options), [prefix] * 3, [""] * 3)
    for label in ctx.labels:
        first = result.samples[0].scores[label]
        assert first == tuple(want[label].tolist())
        t = result.tasks[label]["t"]
        assert t.metrics["acc"] == (float(first[0] >= max(first[1:])) + 1) / 2
        assert t.metrics["ties"] == 1  # the second item: three equal options
    assert result.samples[0].to_json()["choices"] == list(options)


def test_score_pairs_accuracy_and_limit(tokenizer):
    students = models(tokenizer)
    ctx = context_for(students, tokenizer, limit=5)
    good = LINES[0]
    pairs = [Pair(good, good + " dogs dogs dogs"), Pair(good + " dogs dogs dogs", good)] * 4
    result = score_pairs(ctx, {"t": pairs})
    for label in ctx.labels:
        t = result.tasks[label]["t"]
        assert t.n == 5
        scores = ctx.scorer.score([p.good for p in pairs[:5]] + [p.bad for p in pairs[:5]])
        want = (scores[label][:5] > scores[label][5:]).double().mean()
        assert t.metrics["acc"] == pytest.approx(float(want))
    assert result.groups == {"pairs": ("t",)}


def test_accuracy_stderr_is_the_sample_standard_error():
    m = accuracy([1, 0, 1, 1])
    assert m["acc"] == 0.75
    assert m["acc_stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))  # p(1-p)/(n-1)


def test_malformed_jsonl_names_file_and_line(tmp_path):
    f = tmp_path / "x.jsonl"
    f.write_text('{"sentence_good": "a", "sentence_bad": "b"}\n{"sentence_good": \n')
    with pytest.raises(MinidmlError, match=r"x\.jsonl:2: not valid JSON"):
        read_jsonl(f)
    f.write_text('{"sentence_good": "a"}\n')
    with pytest.raises(MinidmlError, match=r"x\.jsonl:1: missing field\(s\) sentence_bad"):
        read_jsonl(f, ("sentence_good", "sentence_bad"))


def test_bf16_scores_stay_close_to_fp32(tokenizer):
    students = models(tokenizer)
    fp32 = Scorer(students, tokenizer).score(LINES[:20])
    bf16 = Scorer(students, tokenizer, precision="bf16").score(LINES[:20])
    for label in fp32:
        rel = ((bf16[label] - fp32[label]).abs() / fp32[label].abs()).max()
        assert 0 < rel < 0.05, (label, rel)  # computed differently, and close
    with pytest.raises(ValueError, match="precision"):
        Scorer(students, tokenizer, precision="fp8")


@pytest.mark.parametrize("x,y", [
    ([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]),
    ([0.1, 0.1, 0.3, 0.2, 0.9, 0.9], [1, 0, 0, 1, 0.5, 0.5]),
    ([3, 1, 2], [1, 2, 3]),
])
def test_spearman_is_the_pearson_correlation_of_mean_ranks(x, y):
    def ranks(v):
        return [sum(u < a for u in v) + (sum(u == a for u in v) + 1) / 2 for a in v]

    rx, ry = ranks(x), ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    num = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    den = (sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry)) ** 0.5
    assert spearman(x, y) == pytest.approx(num / den, abs=1e-12)
    assert spearman(x, [1] * len(x)) != spearman(x, [1] * len(x))  # constant: NaN
    poisoned = [math.nan, *x[1:]]  # a diverged model's scores: NaN, as scipy gives it
    assert math.isnan(spearman(poisoned, y)) and math.isnan(spearman(x, [*y[:-1], math.nan]))


def test_a_choice_is_made_as_torch_max_makes_it_nans_included():
    """The official pipeline takes torch.max's index over an item's choices: the first of
    the highest, or a NaN (the first) where there is one."""
    from minidml.evaluation.suite import chosen, first_chosen

    gen = torch.Generator().manual_seed(0)
    for _ in range(300):
        k = int(torch.randint(2, 6, (1,), generator=gen))
        row = torch.randint(0, 3, (k,), generator=gen).double()  # ties are common
        row[torch.rand(k, generator=gen) < 0.2] = math.nan
        want = int(torch.max(row[None], dim=1)[1])
        assert chosen(row.tolist()) == want, row
        assert first_chosen(row.tolist()) == (want == 0), row
