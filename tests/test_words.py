"""Words as BabyLM counts them: words seen, the tracks' limits, checkpoints by words seen."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidml
from minidml import Shape, TrainConfig
from minidml.data import count_words, read_lines
from minidml.demo.grammar import write_corpus
from minidml.errors import MinidmlError
from minidml.rundir import checkpoint_words, checkpoints, read_metrics
from minidml.trainer import Callback
from minidml.words import (
    WordCount,
    check_plan,
    format_words,
    revision_name,
    step_limit,
    track_milestones,
)

from _helpers import assert_one_line_error, run_cli

TINY = dict(students=(Shape(1, 32, 2),) * 2, context=32, batch_size=8, vocab_size=300,
            log_every=10, eval_every=20, save_every=10, precision="fp32", compile="off")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("words") / "c.txt", 3000, seed=0)


def test_the_tracks_checkpoint_where_the_rules_say():
    small = track_milestones("strict-small")
    assert small == (*range(1_000_000, 10_000_001, 1_000_000),
                     *range(20_000_000, 100_000_001, 10_000_000))
    strict = track_milestones("strict")
    assert strict[:len(small)] == small and strict[-1] == 1_000_000_000 and len(strict) == 28
    assert [revision_name(w) for w in (1_000_000, 20_000_000, 100_000_000)] == [
        "chck_1M", "chck_20M", "chck_100M"]


@given(words=st.integers(1, 10**9), tokens=st.integers(10**3, 10**9),
       per_step=st.integers(1, 10**6), target=st.integers(1, 10**9))
def test_a_checkpoint_is_the_first_step_that_reaches_its_words(words, tokens, per_step, target):
    count = WordCount(words, tokens, per_step)
    step = count.first_step(target)
    assert count.per_model(step) >= target
    assert step == 1 or count.per_model(step - 1) < target


@given(words=st.integers(1, 10**9), tokens=st.integers(10**3, 10**9),
       per_step=st.integers(1, 10**6), target=st.integers(1, 10**9), last=st.integers(1, 10**6))
def test_a_run_checkpoints_a_count_its_next_step_would_reach_at_its_last(words, tokens,
                                                                        per_step, target, last):
    count = WordCount(words, tokens, per_step)
    step = count.reach_step(target, last)
    if step is None:
        assert count.per_model(last + 1) < target
    elif step < last or count.per_model(last) >= target:
        assert step == count.first_step(target)
    else:
        assert step == last and count.per_model(last) < target <= count.per_model(last + 1)


@given(tokens=st.integers(10_000_000, 20_000_000), per_step=st.integers(256, 2**17),
       models=st.integers(1, 4))
def test_a_run_held_to_its_track_has_every_checkpoint_the_rules_require(tokens, per_step,
                                                                        models):
    """10 epochs of a 10M-word corpus stop within a step below 100M words seen (never over):
    that last step is chck_100M, so a run at the track's limit can be submitted."""
    count = WordCount(10_000_000, tokens, per_step, models=models)
    limit = step_limit("strict-small", "per-model", count)
    marks = count.milestone_steps(track_milestones("strict-small"), limit)
    assert sorted(w for ws in marks.values() for w in ws) == list(
        track_milestones("strict-small"))
    assert max(marks) == limit and 100_000_000 in marks[limit]
    assert count.per_model(limit) <= 100_000_000 < count.per_model(limit + 1)


def test_counts_of_words_are_written_short_and_rounded_before_their_unit():
    cases = {1_000_000: "1M", 20_000: "20k", 2_500_000: "2.5M", 999_999: "1M",
             999_999_999: "1B", 999.6: "1k", 8_237_077: "8.24M", 512: "512", 0: "0"}
    assert {v: format_words(v) for v in cases} == cases


def test_words_are_whitespace_separated_words_counted_once(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("one two  three\n\n\tfour\nfive six seven eight\n", encoding="utf-8")
    assert count_words([f], cache_dir=tmp_path / "cache") == 8
    assert list((tmp_path / "cache").glob("words-*.json"))
    assert count_words([f], cache_dir=tmp_path / "cache") == 8  # from the cache


def test_a_count_is_cached_under_the_bytes_it_counted(tmp_path, monkeypatch):
    """A file rewritten between its fingerprint and its counting: the count is kept under
    what was read, so the first content, back again, is counted afresh, not given the
    second's count."""
    from minidml import data

    f = tmp_path / "c.txt"
    first, second = "one two three\n" * 1000, "four five\n" * 10
    f.write_text(first, encoding="utf-8")
    reading = data.read_lines

    def rewritten_before_read(*args, **kwargs):
        f.write_text(second, encoding="utf-8")  # after the fingerprint was taken
        yield from reading(*args, **kwargs)

    monkeypatch.setattr(data, "read_lines", rewritten_before_read)
    assert count_words([f], cache_dir=tmp_path / "cache") == 20
    monkeypatch.setattr(data, "read_lines", reading)
    f.write_text(first, encoding="utf-8")
    assert count_words([f], cache_dir=tmp_path / "cache") == 3000
    f.write_text(second, encoding="utf-8")
    assert count_words([f], cache_dir=tmp_path / "cache") == 20


def test_the_cap_counts_every_model_unless_asked_per_model():
    count = WordCount(8_000_000, 10_000_000, 10_000, models=4)  # 8,000 words a step each
    total = step_limit("strict-small", "total", count)
    per_model = step_limit("strict-small", "per-model", count)
    assert count.total(total) <= 100_000_000 < count.total(total + 1)
    assert per_model == 10_000  # 10 epochs of the corpus come first: 80M words each
    kd = WordCount(8_000_000, 10_000_000, 10_000, models=1, teacher_words=60_000_000)
    assert kd.total(step_limit("strict-small", "total", kd)) <= 100_000_000
    cfg = TrainConfig(track="strict-small", steps=total + 1, students=(Shape(1, 32, 2),) * 4)
    with pytest.raises(MinidmlError, match=r"--steps: .* over what the strict-small track "
                                           r"allows .*--words-cap per-model"):
        check_plan(cfg, count, total + 1, fixed=True, limit=total)
    assert check_plan(cfg, count, total + 1, fixed=False, limit=total) == total  # capped
    # the fix is an option as it is typed: no thousands separator
    one = WordCount(8_000_000, 10_000_000, 1_000)
    limit = step_limit("strict-small", "total", one)
    assert limit == 100_000
    with pytest.raises(MinidmlError, match=r"100,001 steps read .*; use --steps 100000 or "
                                           r"fewer$"):
        check_plan(TrainConfig(track="strict-small", steps=limit + 1), one, limit + 1,
                   fixed=True, limit=limit)


def test_a_run_keeps_checkpoints_at_its_words_and_resumes(corpus, tmp_path):
    marks = (200, 500, 1000, 1900)

    class StopAt(Callback):
        def on_step_end(self, trainer, losses):
            trainer.should_stop = trainer.step >= 15

    settings = dict(TINY, steps=40, checkpoint_words=marks, keep_checkpoints=1)
    minidml.train(corpus, tmp_path / "run", callbacks=[StopAt()], **settings)
    run = minidml.train(corpus, tmp_path / "run", resume=True, **settings)
    meta = json.loads((run.path / "config.json").read_text())["words"]
    words = sum(len(line.split()) for line in read_lines([corpus]))
    assert meta["corpus_words"] == words and meta["checkpoint_words"] == list(marks)
    count = WordCount(words, meta["corpus_tokens"], 8 * 32, models=2)
    kept = {int(c.name.split("-")[1]): checkpoint_words(c) for c in checkpoints(run.path)}
    want = {count.first_step(w): revision_name(w) for w in marks}
    for step, name in want.items():
        assert kept[step]["revisions"] == [name]
        assert kept[step]["words"] == count.per_model(step) >= int(name[5:].replace("k", "000"))
    assert set(kept) == {*want, 40}  # the milestones, whatever --keep-checkpoints, and the end
    assert kept[40]["words_total"] == 2 * count.per_model(40)
    train = [r for r in read_metrics(run.path / "metrics.jsonl") if r["event"] == "train"]
    assert [r["words"] for r in train] == [count.per_model(r["step"]) for r in train]
    # a count only the step after the last would reach is the last step's checkpoint
    beyond = count.per_model(40) + 1
    assert count.first_step(beyond) == 41
    again = minidml.train(corpus, tmp_path / "again", **dict(settings, checkpoint_words=(
        beyond,)))
    kept = {int(c.name.split("-")[1]): checkpoint_words(c) for c in checkpoints(again.path)}
    assert {step: k["revisions"] for step, k in kept.items() if k["revisions"]} == {
        40: [revision_name(beyond)]}


def test_the_checkpoints_by_words_follow_a_changed_plan(corpus, tmp_path):
    """A time budget re-plans its steps as it goes (and stops when out of time): the
    checkpoints by words are those of the plan in force, its last step included."""
    probe = minidml.train(corpus, tmp_path / "probe", **dict(TINY, steps=1))
    meta = json.loads((probe.path / "config.json").read_text())["words"]
    count = WordCount(meta["corpus_words"], meta["corpus_tokens"], 8 * 32, models=2)
    early, late = count.per_model(10), count.per_model(30)
    seen = {}

    class Replan(Callback):
        def on_train_start(self, trainer):
            seen["planned"] = dict(trainer.milestones)
            trainer.total_steps = 20  # as a time budget re-plans
            seen["replanned"] = dict(trainer.milestones)

    run = minidml.train(corpus, tmp_path / "run", callbacks=[Replan()],
                        **dict(TINY, steps=40, checkpoint_words=(early, late)))
    assert seen["planned"] == {10: [early], 30: [late]}
    assert seen["replanned"] == {10: [early]}
    assert run.step == 20
    named = {int(c.name.split("-")[1]): checkpoint_words(c)["revisions"]
             for c in checkpoints(run.path) if checkpoint_words(c).get("revisions")}
    assert named == {10: [revision_name(early)]}


def test_bad_track_input_is_one_line(corpus, tmp_path, capsys, monkeypatch):
    base = ["train", str(corpus), "--students", "1", "--layers", "1", "--width", "32",
            "--heads", "2", "--context", "32", "--batch-size", "8", "--vocab-size", "300"]
    code, _, err = run_cli(*base, "--out", str(tmp_path / "a"), "--track", "strict-small",
                           "--epochs", "11", capsys=capsys)
    assert_one_line_error(code, err, "--epochs 11", "at most 10 epochs")
    code, _, err = run_cli(*base, "--out", str(tmp_path / "b"), "--track", "tiny",
                           capsys=capsys)
    assert code != 0 and "--track" in err and "Traceback" not in err
    code, _, err = run_cli(*base, "--out", str(tmp_path / "c"), "--steps", "5",
                           "--checkpoint-words", "1M", capsys=capsys)
    assert_one_line_error(code, err, "--checkpoint-words 1,000,000", "train longer")
    monkeypatch.setitem(minidml.words.TRACK_WORDS, "strict-small", 1000)
    code, _, err = run_cli(*base, "--out", str(tmp_path / "d"), "--track", "strict-small",
                           capsys=capsys)
    assert_one_line_error(code, err, str(corpus), "over the strict-small track's 1,000")
    for name in "abcd":
        assert not (tmp_path / name).exists()  # nothing half-made


def test_revisions_export_as_the_rules_name_them_and_load(corpus, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import torch

    run = minidml.train(corpus, tmp_path / "run", **dict(TINY, steps=20,
                                                         checkpoint_words=(200, 500)))
    out = tmp_path / "revisions"
    code, stdout, err = run_cli("export", str(run.path), str(out), "--revisions",
                                capsys=capsys)
    assert code == 0, err
    index = json.loads((out / "revisions.json").read_text())
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["chck_200", "chck_500",
                                                                    "main"]
    assert index["revisions"]["main"]["step"] == 20
    x = torch.randint(4, 300, (1, 12))
    for name, record in index["revisions"].items():
        model = transformers.AutoModelForCausalLM.from_pretrained(out / name).eval()
        student = minidml.load(run.path, step=record["step"]).students[index["student"]]
        with torch.no_grad():
            torch.testing.assert_close(model(x).logits, student(x), rtol=1e-4, atol=1e-4)
    assert "--revision" in (out / "README.md").read_text()
    capsys.readouterr()  # what loading the models printed
    code, _, err = run_cli("export", str(run.path), str(out), "--revisions", capsys=capsys)
    assert_one_line_error(code, err, str(out), "--force")
    # inside the run, an earlier export of the revisions is replaced with --force
    inside = run.path / "hf-revisions"
    for again in ([], ["--force"]):
        code, _, err = run_cli("export", str(run.path), str(inside), "--revisions", *again,
                               capsys=capsys)
        assert code == 0, err
    assert (inside / "revisions.json").read_bytes() == (out / "revisions.json").read_bytes()
    plain = minidml.train(corpus, tmp_path / "plain", **dict(TINY, steps=10))
    code, _, err = run_cli("export", str(plain.path), str(tmp_path / "x"), "--revisions",
                           capsys=capsys)
    assert_one_line_error(code, err, "--checkpoint-words")
    assert not (tmp_path / "x").exists()
