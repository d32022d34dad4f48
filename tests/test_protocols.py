"""The two scoring protocols and the BabyLM 2026 zero-shot suites on files written here in the
official formats: which tokens are scored, what results record, and bad input in one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minidml import MinidmlError, Tokenizer
from minidml.evaluation.protocols import DEFAULT_PROTOCOL, PROTOCOLS, get_protocol
from minidml.evaluation.runner import evaluate, require_suites
from minidml.evaluation.suite import spearman

from _helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def tok(tiny_run) -> Tokenizer:
    return tiny_run.tokenizer


def test_the_default_is_the_official_rule():
    assert DEFAULT_PROTOCOL == "babylm-2026" and set(PROTOCOLS) == {"babylm-2026", "lm-eval"}
    with pytest.raises(MinidmlError, match="--protocol lm-evil: choose one of babylm-2026"):
        get_protocol("lm-evil")


def test_the_2026_rule_scores_the_completion_s_tokens(tok):
    """A sentence alone: every token after BOS. A context: the tokens whose span ends past
    where the completion starts, a token across the boundary included."""
    rule = PROTOCOLS["babylm-2026"]
    (ids, skip, stop), = rule.requests(tok, ["the cat sleeps ."])
    assert ids == [Tokenizer.bos_id, *tok.encode("the cat sleeps .")]
    assert (skip, stop) == (1, len(ids))
    (ids, skip, stop), = rule.requests(tok, ["sleeps ."], ["the cat"], [" "])
    assert ids == [Tokenizer.bos_id, *tok.encode("the cat sleeps .")]
    assert ids[:skip] == [Tokenizer.bos_id, *tok.encode("the cat")] and stop == len(ids)
    # no join: the option continues the prefix's last word, so the piece that spans the
    # boundary is scored with the option
    (ids, skip, stop), = rule.requests(tok, ["ts sleep ."], ["the ca"], [""])
    spans = tok.encode_with_spans(["the cats sleep ."])[0][1]
    assert ids == [Tokenizer.bos_id, *tok.encode("the cats sleep .")]
    assert skip == next(i for i in range(1, len(ids)) if spans[i][1] > len("the ca"))


def test_the_lm_eval_rule_is_a_space_then_the_sentence(tok):
    (ids, skip, stop), = PROTOCOLS["lm-eval"].requests(tok, ["the cat sleeps ."])
    assert ids == [Tokenizer.bos_id, *tok.encode(" the cat sleeps .")] and skip == 1


@pytest.fixture()
def root(tmp_path):
    """A data root with the 2026 tasks in their official formats."""
    base = tmp_path / "babylm-eval-2026" / "full_eval"
    et = base / "entity_tracking"
    et.mkdir(parents=True)
    for stem in ("regular", "ambiref", "move_contents"):
        rows = [{"sample_id": i, "numops": i % 2, "input_prefix": "the dog sees ",
                 "options": ["the cat .", "the dogs .", "a cat ."]} for i in range(4)]
        (et / f"{stem}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    wug = base / "wug_adj_nominalization"
    wug.mkdir()
    rows = [{"sentences": f"the dog {w} .\tthe dog {w}s .", "ratio": r}
            for w, r in [("sees", 0.9), ("runs", 0.1), ("cat", 0.5), ("dog", 0.3)]]
    (wug / "wug_adj_nominalization.jsonl").write_text("".join(json.dumps(r) + "\n"
                                                              for r in rows))
    past = base / "wug_past_tense"  # no public copy: a file in the same format
    past.mkdir()
    (past / "wug_past_tense.jsonl").write_text("".join(
        json.dumps({"sentences": f"the dog {w}ed .\tthe dog {w}t .", "ratio": r}) + "\n"
        for w, r in [("sleep", 0.2), ("run", 0.7), ("see", 0.4)]))
    comps = base / "comps"
    comps.mkdir()
    for stem in ("comps_base", "comps_wugs", "comps_wugs_dist-before",
                 "comps_wugs_dist-in-between"):
        row = {"prefix_acceptable": "the dog", "prefix_unacceptable": "the cat",
               "property_phrase": "sees the dogs ."}
        (comps / f"{stem}.jsonl").write_text(json.dumps(row) + "\n" + json.dumps(row) + "\n")
    return tmp_path


def test_entity_tracking_is_the_mean_of_its_files_means(tiny_run, root):
    res = evaluate(tiny_run, ["entity-tracking"], student="0", data_dir=root)
    assert res.ok, res.outcomes[0].error
    out = res.to_json()
    tasks = {k.split("/")[1]: v for k, v in out["results"]["student-0"].items()}
    assert set(tasks) == {f"{s}_{n}_ops" for s in ("regular", "ambiref", "move_contents")
                          for n in (0, 1)}
    files = [(tasks[f"{s}_0_ops"]["acc"] + tasks[f"{s}_1_ops"]["acc"]) / 2
             for s in ("regular", "ambiref", "move_contents")]
    assert out["groups"]["student-0"]["entity-tracking"]["score"] == pytest.approx(
        sum(files) / 3)
    # each item is right when its first option scores at least as high as every other
    samples = res.outcomes[0].result.samples
    assert len(samples) == 12 and all(len(s.scores["student-0"]) == 3 for s in samples)
    by_task: dict[str, list[float]] = {}
    for s in samples:
        v = s.scores["student-0"]
        by_task.setdefault(s.task, []).append(float(v[0] >= max(v[1:])))
    for name, hits in by_task.items():
        assert tasks[name]["acc"] == pytest.approx(sum(hits) / len(hits))
    assert out["protocol"] == "babylm-2026"
    assert out["versions"]["entity-tracking"] == "1+babylm-2026"


def test_fast_entity_tracking_is_its_regular_file_as_the_official_collation_counts(
        tiny_run, root):
    """The official collation takes regular_0_ops … regular_5_ops of the fast set and
    refuses any other subtask: the fast suite reads the regular file alone."""
    from minidml.evaluation import submission

    fast = root / "babylm-eval-2026" / "fast_eval" / "entity_tracking_fast"
    fast.mkdir(parents=True)
    full = root / "babylm-eval-2026" / "full_eval" / "entity_tracking"
    (fast / "regular.jsonl").write_bytes((full / "regular.jsonl").read_bytes())
    res = evaluate(tiny_run, ["entity-tracking-fast"], student="0", data_dir=root)
    assert res.ok, res.outcomes[0].error
    out = res.to_json()
    tasks = {k.split("/")[1]: v["acc"] for k, v in out["results"]["student-0"].items()}
    assert set(tasks) == {"regular_0_ops", "regular_1_ops"}
    assert set(tasks) <= set(submission.UNPUBLISHED["entity-tracking-fast"])
    assert out["groups"]["student-0"]["entity-tracking-fast"]["score"] == pytest.approx(
        sum(tasks.values()) / 2)
    assert out["versions"]["entity-tracking-fast"] == "2+babylm-2026"  # the regular file


@pytest.mark.parametrize("suite,task,ratios", [
    ("wug-adj", "wug_adj", [0.9, 0.1, 0.5, 0.3]), ("wug-past", "wug_past", [0.2, 0.7, 0.4])])
def test_wug_is_the_rank_correlation_of_the_first_form_s_share(tiny_run, root, suite, task,
                                                                 ratios):
    res = evaluate(tiny_run, [suite], data_dir=root)
    assert res.ok, res.outcomes[0].error
    result = res.outcomes[0].result
    for label in res.labels:
        lls = torch.tensor([s.scores[label] for s in result.samples], dtype=torch.float32)
        firsts = torch.softmax(lls, 1)[:, 0].tolist()  # float32, as the official pipeline
        assert all(abs(f - 1 / (1 + math.exp(b - a))) < 1e-6
                   for f, (a, b) in zip(firsts, (s.scores[label] for s in result.samples),
                                        strict=True))
        rho = result.tasks[label][task].metrics["rho"]
        assert rho == pytest.approx(spearman(firsts, ratios), abs=1e-12)
    assert f"{task} (rho)" in res.table()


def test_comps_scores_the_property_after_each_subject(tiny_run, root):
    res = evaluate(tiny_run, ["comps"], student="0", data_dir=root)
    assert res.ok, res.outcomes[0].error
    s = res.outcomes[0].result.samples[0]
    want = tiny_run.students[0]
    ids = [Tokenizer.bos_id, *tiny_run.tokenizer.encode("the dog sees the dogs .")]
    start = len([Tokenizer.bos_id, *tiny_run.tokenizer.encode("the dog")])
    with torch.no_grad():
        logp = torch.log_softmax(want(torch.tensor([ids[:-1]])).double(), -1)[0]
    expected = sum(float(logp[p - 1, ids[p]]) for p in range(start, len(ids)))
    assert s.scores["student-0"][0] == pytest.approx(expected, abs=1e-4)
    assert set(res.outcomes[0].result.tasks["student-0"]) == {
        "base", "wugs", "wugs_dist_before", "wugs_dist_in_between"}


def test_2026_suites_refuse_the_lm_eval_protocol(tiny_run, root):
    with pytest.raises(MinidmlError, match="--suite wug-adj: defined only under --protocol "
                                           "babylm-2026, not lm-eval"):
        evaluate(tiny_run, ["wug-adj"], data_dir=root, protocol="lm-eval")
    with pytest.raises(MinidmlError, match="--suites comps: defined only"):
        require_suites(["comps"], root, option="--suites", protocol="lm-eval")
    res = evaluate(tiny_run, ["all"], data_dir=root, protocol="lm-eval", limit=2)
    assert [o.spec.name for o in res.outcomes] == ["agreement"]
    assert res.to_json()["versions"] == {"agreement": "3+lm-eval"}


def test_a_missing_task_says_where_its_file_belongs(tiny_run, tmp_path):
    res = evaluate(tiny_run, ["wug-past", "comps"], data_dir=tmp_path)
    for o in res.outcomes:
        assert o.status == "unavailable"
        assert "cannot be downloaded: put the official file there" in o.error
    assert "wug_past_tense" in res.outcomes[0].error
    assert "comps_base.jsonl" in res.outcomes[1].error


@pytest.mark.parametrize("task,file,line,message", [
    ("wug-adj", "wug_adj_nominalization/wug_adj_nominalization.jsonl",
     {"sentences": "a\tb"}, "'ratio' should be the share"),
    ("wug-adj", "wug_adj_nominalization/wug_adj_nominalization.jsonl",
     {"sentences": "only one sentence", "ratio": 0.5}, "two sentences separated by one tab"),
    ("entity-tracking", "entity_tracking/regular.jsonl",
     {"numops": 0, "input_prefix": "x ", "options": "the cat"}, "field 'options' should be"),
    ("entity-tracking", "entity_tracking/ambiref.jsonl",
     {"numops": 0, "input_prefix": "x ", "options": ["one"]}, "two or more strings"),
    ("comps", "comps/comps_wugs.jsonl", {"prefix_acceptable": "a"}, "missing field"),
])
def test_bad_rows_are_one_line_naming_the_file_and_line(tiny_run, root, task, file, line,
                                                        message):
    path = root / "babylm-eval-2026" / "full_eval" / file
    path.write_text(path.read_text() + json.dumps(line) + "\n")
    res = evaluate(tiny_run, [task], data_dir=root)
    outcome = res.outcomes[0]
    assert outcome.status == "failed"
    assert message in outcome.error and f"{path}:" in outcome.error
    assert "\n" not in outcome.error


def test_cli_protocol_is_checked_first_and_recorded(tiny_run, tmp_path, capsys):
    before = sorted((tiny_run.path / "eval").glob("*")) if (tiny_run.path / "eval").exists() \
        else []
    code, _, err = run_cli("eval", tiny_run.path, "--suite", "agreement", "--protocol", "2026",
                           capsys=capsys)
    assert_one_line_error(code, err, "--protocol 2026: choose one of babylm-2026, lm-eval")
    after = sorted((tiny_run.path / "eval").glob("*")) if (tiny_run.path / "eval").exists() \
        else []
    assert after == before  # nothing written
    out = tmp_path / "r.json"
    code, stdout, _ = run_cli("eval", tiny_run.path, "--suite", "agreement", "--protocol",
                              "lm-eval", "--output", out, "-q", capsys=capsys)
    assert code == 0
    data = json.loads(out.read_text())
    assert data["protocol"] == "lm-eval" and data["versions"]["agreement"] == "3+lm-eval"
    assert "protocol: lm-eval" in stdout


def test_the_boundary_is_recorded_and_old_runs_keep_theirs(tiny_run, grammar_corpus, tmp_path):
    import minidml
    from minidml import Shape, TrainConfig

    meta = json.loads((tiny_run.path / "config.json").read_text())
    assert meta["tokenizer"]["boundary"] == "prefix" == tiny_run.tokenizer.boundary
    cfg = TrainConfig(students=(Shape(1, 32, 2),), mode="single", context=32, batch_size=8,
                      vocab_size=400, warmup_steps=2, eval_every=5, eval_tokens=512, steps=5,
                      tokenizer_boundary="none")
    old = minidml.train(grammar_corpus, tmp_path / "old", cfg)
    meta = json.loads((old.path / "config.json").read_text())
    assert meta["tokenizer"]["boundary"] == "none"
    assert meta["config"]["tokenizer_boundary"] == "none"
    again = minidml.load(old.path)
    assert again.tokenizer.boundary == "none"
    # such a run's first words differ between the protocols; the official rule scores them
    # as its export would be scored
    a, = PROTOCOLS["babylm-2026"].requests(again.tokenizer, ["the cat sleeps ."])
    b, = PROTOCOLS["lm-eval"].requests(again.tokenizer, ["the cat sleeps ."])
    assert a.ids[1:] == again.tokenizer.encode("the cat sleeps .") != b.ids[1:]


def test_fetching_a_task_without_a_public_copy_says_where_it_belongs(tmp_path, capsys):
    code, _, err = run_cli("data", "fetch", "comps", "--data-dir", tmp_path, capsys=capsys)
    assert_one_line_error(code, err, "comps: its data has no public download",
                          str(tmp_path / "babylm-eval-2026/full_eval/comps/comps_base.jsonl"))
    assert not any(tmp_path.iterdir())


def test_cli_bad_data_is_one_line_and_writes_no_results(tiny_run, root, tmp_path, capsys):
    path = root / "babylm-eval-2026/full_eval/wug_adj_nominalization/wug_adj_nominalization.jsonl"
    path.write_text(json.dumps({"sentences": "a\tb"}) + "\n")
    out = tmp_path / "r.json"
    code, stdout, err = run_cli("eval", tiny_run.path, "--suite", "wug-adj", "--data-dir",
                                root, "--output", out, "-q", capsys=capsys)
    assert_one_line_error(code, err, f"wug-adj: {path}:1: 'ratio' should be")
    assert not out.exists() and stdout == ""
    # with a suite that completes beside it, its results are kept and the exit is non-zero
    code, stdout, err = run_cli("eval", tiny_run.path, "--suite", "wug-adj", "--suite",
                                "agreement", "--limit", "2", "--data-dir", root, "--output",
                                out, "-q", capsys=capsys)
    assert code != 0 and "suite(s) wug-adj did not complete" in err
    assert json.loads(out.read_text())["suites"]["wug-adj"]["status"] == "failed"
    assert "FAILED: " in stdout
