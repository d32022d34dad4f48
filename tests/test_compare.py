"""``minidml compare`` end to end on the generated grammar corpus, with tiny budgets."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import statistics

import pytest

from minidml.cli.commands import main
from minidml.config import TrainConfig
from minidml.errors import MinidmlError
from minidml.experiments.compare import ARMS, CompareConfig, Variant, training_flops
from minidml.experiments.report import add_best_validation, add_outer_steps, table
from minidml.model import Shape, StudentConfig
from minidml.rundir import read_metrics
from minidml.words import WordCount

TOKENS = 32_000  # per model: Muon takes the tiny students well below the unigram entropy
TINY = ["--budget", "400k", "--students", "3", "--tokens", str(TOKENS),
        "--suites", "agreement,glue", "--glue-tasks", "rte", "--max-train-examples", "32",
        "--glue-epochs", "1", "--limit", "100", "--vocab-size", "400", "--context", "32",
        "--batch-size", "16", "--lr", "3e-3", "--warmup", "10", "--outer-every", "5", "--quiet",
        "--curve-suites", "agreement", "--curve-words", "3k,6k",
        "--vary", "alpha=0.5", "--vary", "kd:temperature=1"]
VARIANTS = ["wml alpha=0.5", "kd temperature=1.0"]
# every arm tracked in TensorBoard (CI installs the extra; elsewhere only where it is present)
TRACKED = bool(os.environ.get("MINIDML_DATA_DIR") or importlib.util.find_spec("tensorboard"))
if TRACKED:
    TINY = ["--log-to", "tensorboard", *TINY]


@pytest.fixture(scope="module")
def compared(grammar_corpus, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "cmp"
    main(["compare", str(grammar_corpus), "--out", str(out), "--data-dir", str(data_dir),
          *TINY])
    return out


@pytest.mark.slow
def test_each_arms_run_is_tracked_with_its_scores(compared, require_extra):
    if not TRACKED:
        pytest.skip("tensorboard is not installed: pip install 'minidml[tensorboard]'")
    require_extra("tensorboard", "tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    report = json.loads((compared / "report.json").read_text())
    for arm in report["arms"]:
        acc = EventAccumulator(str(compared / arm["dir"] / "tensorboard"),
                               size_guidance={"scalars": 0})
        acc.Reload()
        losses = acc.Scalars("train/loss/0")
        assert losses[-1].step == arm["steps"]
        for m in arm["models"]:
            (event,) = acc.Scalars(f"scores/agreement/{m['label']}")
            assert event.step == arm["steps"]
            assert event.value == pytest.approx(m["scores"]["agreement"]["score"], rel=1e-6)


@pytest.mark.slow
def test_every_arm_trains_on_equal_data_and_learns(compared):
    report = json.loads((compared / "report.json").read_text())
    assert [a["arm"] for a in report["arms"]] == [*ARMS, *VARIANTS]
    h1 = report["unigram_entropy"]
    tokens = {a["tokens_per_model"] for a in report["arms"]}
    assert len(tokens) == 1 and tokens.pop() >= TOKENS - 16 * 32  # the same data for every model
    shas = set()
    for arm in report["arms"]:
        meta = json.loads((compared / arm["dir"] / "config.json").read_text())
        shas.add(meta["tokenizer"]["sha256"])
        assert meta["config"]["seed"] == 0  # and so the same batches, in the same order
        for m in arm["models"]:
            assert m["val_loss"] < h1 - 0.3, (arm["arm"], m["label"], m["val_loss"], h1)
            score = m["scores"]["agreement"]
            assert 0 <= score["score"] <= 1 and score["stderr"] > 0 and score["n_tasks"] == 5
        students = [m for m in arm["models"] if m["label"] != "ensemble"]
        champion = min(students, key=lambda m: m["val_loss"])
        assert [m["champion"] for m in students] == [m is champion for m in students]
    assert shas == {report["tokenizer"]["sha256"]}  # one tokenizer for all


@pytest.mark.slow
def test_the_macro_is_the_mean_of_the_suites_and_glue_keeps_its_caps(compared):
    report = json.loads((compared / "report.json").read_text())
    assert report["score_columns"] == ["agreement", "glue", "macro"]
    for arm in report["arms"]:
        for m in arm["models"]:
            s = m["scores"]
            assert s["macro"]["score"] == pytest.approx(
                (s["agreement"]["score"] + s["glue"]["score"]) / 2)
            assert s["macro"]["stderr"] == pytest.approx(
                (s["agreement"]["stderr"] ** 2 + s["glue"]["stderr"] ** 2) ** 0.5 / 2)
        results = json.loads((compared / arm["dir"] / "eval.json").read_text())["results"]
        assert {t for t in results["student-0"] if t.startswith("glue")} == {"glue/rte"}
        assert results["student-0"]["glue/rte"]["n"] == 100  # --limit
    champions = [r for r in report["table"] if r.get("champion_row")]
    assert all("macro" in r for r in champions)
    assert all("macro" in r for r in report["paired"])
    # only the zero-shot suites have per-example intervals
    assert {r["suite"] for r in report["paired_examples"]} == {"agreement"}
    for arm in report["arms"]:
        for m in arm["models"]:
            assert m["best_val_loss"] <= m["val_loss"] + 1e-12
            assert 0 < m["best_val_step"] <= arm["steps"]
    md = (compared / "report.md").read_text()
    assert "| lowest (step) |" in md
    assert "macro: their mean" in md and "max_train_examples 32" in md and "Δ macro" in md


@pytest.mark.slow
def test_the_arms_are_what_they_claim(compared):
    report = json.loads((compared / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}
    shapes = [Shape(**{k: c[k] for k in ("n_layers", "d_model", "n_heads", "mlp_ratio")})
              for c in report["students"]]
    big = shapes[0]  # the N/2 student: single's, and kd's student
    for arm in ("single", "kd"):
        assert [Shape(**m["shape"]) for m in arms[arm]["models"]] == [big]
    assert [Shape(**m["shape"]) for m in arms["wml"]["models"][:3]] == shapes
    assert [m["label"] for m in arms["single"]["models"]] == ["student-0"]
    assert [m["label"] for m in arms["kd"]["models"]] == ["student-0"]
    labels = ["student-0", "student-1", "student-2", "ensemble"]
    assert [m["label"] for m in arms["dml"]["models"]] == labels
    assert arms["dml"]["mode"] == "dml" and arms["wml"]["mode"] == "wml"
    assert all(m["omega"] == pytest.approx(1 / 3) for m in arms["dml"]["models"][:3])
    learned = [m["omega"] for m in arms["wml"]["models"][:3]]
    assert sum(learned) == pytest.approx(1) and max(learned) > 0.4  # ω moved
    assert arms["wml"]["models"][0]["val_loss"] != arms["dml"]["models"][0]["val_loss"]
    assert arms["kd"]["temperature"] == 2.0 and arms["dml"]["temperature"] == 1.0
    teacher = arms["kd"]["teacher"]["models"][0]
    assert teacher["n_params"] > arms["kd"]["models"][0]["n_params"]
    # FLOPs: the analytic count; kd pays for its teacher, wml for its outer steps
    cfg = StudentConfig.from_shape(big, report["tokenizer"]["vocab_size"], report["context"])
    tokens = arms["single"]["tokens_per_model"]
    assert arms["single"]["train_flops"] == training_flops(cfg, tokens, report["context"])
    rows = {(r["arm"], r["model"]): r for r in report["table"]}
    assert rows[("kd", "student-0")]["arm_flops"] > (rows[("single", "student-0")]["arm_flops"]
                                                     + arms["kd"]["teacher"]["train_flops"])
    assert rows[("wml", "student-0")]["arm_flops"] > rows[("dml", "student-0")]["arm_flops"]
    # every arm that learns ω (wml and its variant) summarises its outer steps, others none
    for a in report["arms"]:
        outer = a.get("outer_steps")
        assert (outer is not None) == (a.get("base_arm", a["arm"]) == "wml"), a["arm"]
        if outer:
            assert outer["n"] == a["steps"] // 5  # --outer-every 5
            assert len(outer["omega_range"]) == 3
            assert 0 <= outer["second_order_share_median"] <= outer["second_order_share_max"]
    md = (compared / "report.md").read_text()
    assert "## Champions" in md and "## Every model" in md and "★" in md
    assert md.count("2nd order") == 1 + 2 * report["seeds"]  # the legend, then wml and its variant
    for arm in [*ARMS, *VARIANTS]:
        assert f"| {arm} |" in md


@pytest.mark.slow
def test_compare_reports_paired_differences(compared):
    report = json.loads((compared / "report.json").read_text())
    pairs = {(r["a"], r["b"], r["model"]) for r in report["paired"]}
    assert {("wml", "dml", "champion"), ("wml", "kd", "champion"),
            ("wml", "single", "champion"), ("dml", "single", "champion"),
            ("kd", "single", "champion"), ("wml", "dml", "ensemble"),
            ("wml alpha=0.5", "wml", "champion")} <= pairs
    champions = {a["arm"]: next(m for m in a["models"] if m["champion"])
                 for a in report["arms"]}
    row = next(r for r in report["paired"] if (r["a"], r["b"], r["model"])
               == ("wml", "single", "champion"))
    assert row["val_loss"]["mean"] == pytest.approx(champions["wml"]["val_loss"]
                                                    - champions["single"]["val_loss"])
    ex = {(r["a"], r["b"], r["suite"]): r for r in report["paired_examples"]}
    got = ex[("wml", "single", "agreement")]["bootstrap"]
    want = (champions["wml"]["scores"]["agreement"]["score"]
            - champions["single"]["scores"]["agreement"]["score"])
    assert got["difference"] == pytest.approx(want)
    assert got["low"] <= got["difference"] <= got["high"]
    md = (compared / "report.md").read_text()
    assert "## Paired differences over seeds" in md and "## Per-example paired intervals" in md
    assert "| wml − single | champion | 1 |" in md
    assert all(len(r["mcnemar"]) == 1 for r in report["paired_examples"])  # one seed


@pytest.mark.slow
def test_a_variant_is_its_arm_with_one_setting_changed(compared):
    report = json.loads((compared / "report.json").read_text())
    arms = {a["arm"]: a for a in report["arms"]}

    def config(arm):
        return json.loads((compared / arms[arm]["dir"] / "config.json").read_text())["config"]

    for name, base, key, value in (("wml alpha=0.5", "wml", "alpha", 0.5),
                                   ("kd temperature=1.0", "kd", "temperature", 1.0)):
        ours, theirs = config(name), config(base)
        assert ours[key] == value != theirs[key]
        # nothing else differs: the same students, data, seed and token budget
        assert {k for k in ours if ours[k] != theirs[k]} == {key}
        assert arms[name]["base_arm"] == base and arms[name]["changes"] == {key: value}
        assert arms[name]["tokens_per_model"] == arms[base]["tokens_per_model"]
    assert arms["wml alpha=0.5"]["alpha"] == 0.5
    assert arms["kd temperature=1.0"]["temperature"] == 1.0
    # kd's variant distils from the teacher that kd trained: one teacher, trained once
    assert config("kd temperature=1.0")["teachers"] == config("kd")["teachers"]
    assert not (compared / "seed-0" / "kd-temperature=1.0" / "teacher").exists()
    assert arms["wml alpha=0.5"]["models"][0]["val_loss"] != arms["wml"]["models"][0]["val_loss"]
    # the report's Δ is the variant's champion minus its arm's
    champion = {r["arm"]: r for r in report["table"] if r.get("champion_row")}
    delta = champion["wml alpha=0.5"]["val_loss"] - champion["wml"]["val_loss"]
    md = (compared / "report.md").read_text()
    assert "## Variants" in md
    row = next(line for line in md.splitlines() if line.startswith("| wml alpha=0.5 |")
               and "Δ" in line)
    assert f"{champion['wml alpha=0.5']['val_loss']:.3f} (Δ {delta:+.3f})" in row



@pytest.mark.slow
def test_a_report_leaves_out_variants_whose_arm_has_not_finished(compared, require_extra):
    """Pieces run apart (--only) or cut off: a variant, or the arm it varies, may be missing
    from a report; the variants table and picture show the pairs that both finished."""
    from minidml.experiments import plot
    from minidml.experiments.report import format_report

    report = json.loads((compared / "report.json").read_text())
    for gone in ("wml", "kd temperature=1.0"):  # an arm before its variant, a variant alone
        report["arms"] = [a for a in report["arms"] if a["arm"] != gone]
        report["table"] = [r for r in report["table"] if r["arm"] != gone]
        if gone == "wml":  # kd's variant stands with kd; wml's is left out
            md = format_report(report)
            variants = md.split("## Variants")[1].split("\n## ")[0]
            assert "| kd temperature=1.0 |" in variants and "| wml alpha=0.5 |" not in variants
    assert "## Variants" not in format_report(report)  # neither pair is whole
    require_extra("plot", "matplotlib")
    assert plot._variants_figure(report) is None

@pytest.mark.slow
def test_only_the_champions_are_scored_when_asked(grammar_corpus, data_dir, tmp_path):
    out = tmp_path / "cmp"
    cut = TINY.index("--vary")
    main(["compare", str(grammar_corpus), "--out", str(out), "--data-dir", str(data_dir),
          *TINY[:cut], "--arms", "single,dml", "--eval-students", "champion"])
    report = json.loads((out / "report.json").read_text())
    for arm in report["arms"]:
        for m in arm["models"]:
            assert bool(m["scores"]) == m["champion"], (arm["arm"], m["label"])
        labels = set(json.loads((out / arm["dir"] / "eval.json").read_text())["results"])
        assert labels == {next(m["label"] for m in arm["models"] if m["champion"])}
    # the champions (single has no ensemble), then, where dml's champion is another
    # student, single's student-0 like for like: its validation loss only
    row, *alike = report["paired"]
    assert all(r["model"] == "student-0" and "val_loss" in r for r in alike)
    assert len(alike) == (report["arms"][1]["models"][0]["champion"] is False)
    assert row["model"] == "champion" and {"val_loss", "agreement", "glue", "macro"} <= set(row)
    md = (out / "report.md").read_text()
    assert any(line.startswith("| dml | ensemble |") and line.endswith("| - | - | - |")
               for line in md.splitlines())
    with pytest.raises(MinidmlError, match="--eval-students some: choose all or champion"):
        CompareConfig(budget=1000, students=2, eval_students="some")


@pytest.mark.slow
def test_a_comparison_grows_its_seeds_on_resume(grammar_corpus, tmp_path, capsys):
    """One seed's verdict first, then more: --resume with more --seeds trains the new seeds'
    arms only, and the report has every seed; fewer seeds than it has is refused."""
    out = tmp_path / "cmp"
    args = ["compare", str(grammar_corpus), "--out", str(out), "--budget", "400k",
            "--students", "2", "--tokens", "8k", "--arms", "single", "--suites", "agreement",
            "--limit", "20", "--vocab-size", "400", "--context", "32", "--batch-size", "16",
            "--warmup", "2", "--quiet"]
    main([*args, "--seeds", "2"])
    first = json.loads((out / "report.json").read_text())
    capsys.readouterr()
    main([*args, "--seeds", "3", "--resume"])
    err = capsys.readouterr().err
    assert "[seed 0] single: finished earlier, reused" in err
    assert "[seed 1] single: finished earlier, reused" in err
    assert err.count(": training ") == 1 and "[seed 2] single: training" in err
    grown = json.loads((out / "report.json").read_text())
    assert [a["seed"] for a in grown["arms"]] == [0, 1, 2]
    assert grown["arms"][:2] == first["arms"]
    saved = json.loads((out / "compare.json").read_text())["settings"]["compare"]
    assert saved["seeds"] == 3
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--seeds", "2", "--resume"])
    assert exit_.value.code == 1
    assert "has 3 seeds; --seeds may grow, not shrink" in capsys.readouterr().err


@pytest.mark.slow
def test_a_run_trained_alike_in_another_comparison_is_reused(grammar_corpus, tmp_path, capsys):
    """--words total at K times the tokens trains each wml student as --words per-model at
    T did: --reuse-from takes that run (linked, not trained) with its evaluations, made
    alike, its curve counted as words are counted here; a finished comparison's record
    without its checkpoints is enough for that, not for evaluating another way."""
    from minidml.experiments.compare import _reusable

    common = ["--budget", "400k", "--students", "2", "--arms", "single,wml", "--suites",
              "agreement", "--limit", "20", "--vocab-size", "400", "--context", "32",
              "--batch-size", "16", "--warmup", "2", "--outer-every", "5", "--quiet",
              "--curve-suites", "agreement"]
    per_model, total = tmp_path / "per-model", tmp_path / "total"
    main(["compare", str(grammar_corpus), "--out", str(per_model), *common,
          "--tokens", "8192", "--curve-words", "2k"])
    source_wml = per_model / "seed-0" / "wml"
    metrics_before = (source_wml / "metrics.jsonl").read_bytes()
    capsys.readouterr()
    main(["compare", str(grammar_corpus), "--out", str(total), *common, "--tokens", "16384",
          "--words", "total", "--curve-words", "4k", "--reuse-from", str(per_model)])
    err = capsys.readouterr().err
    assert f"the shared tokenizer: {per_model / 'tokenizer.model'}, made alike" in err
    assert f"[seed 0] wml: the same training and evaluation as {source_wml}, reused" in err
    assert "[seed 0] single: training" in err and err.count(": training ") == 1
    a, b = (json.loads((d / "seed-0" / "wml" / "arm.json").read_text())
            for d in (per_model, total))
    assert b["reused_from"] == str(source_wml.resolve()) and b["words"] == "total"
    assert b["steps"] == a["steps"] and b["tokens_total"] == a["tokens_total"]
    assert [m["val_loss"] for m in b["models"]] == [m["val_loss"] for m in a["models"]]
    assert [m["scores"] for m in b["models"]] == [m["scores"] for m in a["models"]]
    # its curve counted in the total's words (4k in total: 2k per student), scores the same
    assert [p["milestone"] for p in b["curve"]] == [4000, "end"]
    assert [p["words"] for p in b["curve"]] == [p["words"] for p in a["curve"]]
    assert [p["scores"] for p in b["curve"]] == [p["scores"] for p in a["curve"]]
    assert all(p["at"] == p["words_total"] for p in b["curve"])
    assert (total / "seed-0" / "wml" / "eval.samples.jsonl").read_bytes() == (
        source_wml / "eval.samples.jsonl").read_bytes()
    # the checkpoints are shared, the source is left as it was
    ckpt = next((total / "seed-0" / "wml" / "checkpoints").rglob("*.safetensors"), None) or \
        next(p for p in (total / "seed-0" / "wml" / "checkpoints").rglob("*") if p.is_file())
    twin = source_wml / ckpt.relative_to(total / "seed-0" / "wml")
    assert ckpt.stat().st_ino == twin.stat().st_ino
    assert (source_wml / "metrics.jsonl").read_bytes() == metrics_before
    assert "trained in another comparison and reused here: wml" in (
        total / "report.md").read_text()
    # what is reused is a like-for-like run only
    from minidml.config import TrainConfig as Cfg
    meta = json.loads((source_wml / "config.json").read_text())
    cfg, steps = Cfg.from_dict(meta["config"], "config.json"), meta["total_steps"]
    tok = per_model / "tokenizer.model"
    assert _reusable(source_wml, cfg, steps, tok)
    assert not _reusable(source_wml, cfg, steps + 1, tok)
    assert not _reusable(source_wml, cfg.replace(lr=cfg.lr * 2), steps, tok)
    assert not _reusable(source_wml, cfg.replace(checkpoint_words=(3000,)), steps, tok)
    assert not _reusable(per_model / "seed-0" / "kd", cfg, steps, tok)
    with pytest.raises(SystemExit):
        main(["compare", str(grammar_corpus), "--out", str(tmp_path / "x"), *common,
              "--tokens", "8192", "--reuse-from", str(tmp_path)])
    assert "--reuse-from" in capsys.readouterr().err
    # the source's record without its checkpoints (as a machine keeps it for later) serves
    # a comparison that evaluates alike, not one that evaluates otherwise (--limit 10)
    shutil.rmtree(source_wml / "checkpoints")
    for out, limit, reused in (("record", "20", True), ("other-limit", "10", False)):
        args = [a if a != "20" else limit for a in common]
        main(["compare", str(grammar_corpus), "--out", str(tmp_path / out), *args, "--arms",
              "wml", "--tokens", "16384", "--words", "total", "--curve-words", "4k",
              "--reuse-from", str(per_model)])
        err = capsys.readouterr().err
        assert ("[seed 0] wml: training" not in err) == reused, err
        c = json.loads((tmp_path / out / "seed-0" / "wml" / "arm.json").read_text())
        assert (c["curve"] == b["curve"]) == reused


@pytest.mark.slow
def test_kd_and_its_teacher_are_reused_from_a_record(grammar_corpus, tmp_path, capsys):
    """kd's student names its teacher by where it lies, in its own comparison: it is reused
    where its teacher trained alike, and with it its teacher from a record without
    checkpoints; a kd student that must train here gets a teacher trained here."""
    from minidml.config import TrainConfig as Cfg
    from minidml.experiments.compare import _trained_alike

    common = ["--budget", "400k", "--students", "2", "--arms", "kd", "--suites", "agreement",
              "--limit", "20", "--vocab-size", "400", "--context", "32", "--batch-size", "16",
              "--warmup", "2", "--quiet", "--curve-suites", "agreement", "--curve-words", "2k",
              "--tokens", "8192"]
    first = tmp_path / "first"
    main(["compare", str(grammar_corpus), "--out", str(first), *common])
    record = tmp_path / "record"  # as a machine keeps it: no checkpoints
    shutil.copytree(first, record, ignore=shutil.ignore_patterns("checkpoints"))
    capsys.readouterr()
    again = tmp_path / "again"
    main(["compare", str(grammar_corpus), "--out", str(again), *common,
          "--reuse-from", str(record)])
    err = capsys.readouterr().err
    assert ": training " not in err, err
    assert "[seed 0] kd teacher: the same training and evaluation as" in err
    assert "[seed 0] kd: the same training and evaluation as" in err
    a, b = (json.loads((d / "seed-0" / "kd" / "arm.json").read_text()) for d in (first, again))
    assert [m["val_loss"] for m in b["models"]] == [m["val_loss"] for m in a["models"]]
    assert b["teacher"]["models"] == a["teacher"]["models"]
    assert [p["scores"] for p in b["curve"]] == [p["scores"] for p in a["curve"]]
    # the teacher is compared as a run: another teacher makes another student
    kd = again / "seed-0" / "kd"
    meta = json.loads((kd / "config.json").read_text())
    cfg, steps = Cfg.from_dict(meta["config"], "config.json"), meta["total_steps"]
    tok = again / "tokenizer.model"
    assert _trained_alike(first / "seed-0" / "kd", cfg, steps, tok)
    other_teacher = tmp_path / "other-teacher"
    shutil.copytree(again / "seed-0" / "teacher", other_teacher)
    tmeta = json.loads((other_teacher / "config.json").read_text())
    tmeta["config"]["lr"] *= 2
    (other_teacher / "config.json").write_text(json.dumps(tmeta))
    assert not _trained_alike(first / "seed-0" / "kd",
                              cfg.replace(teachers=(str(other_teacher),)), steps, tok)
    # a new variant of kd trains here: its teacher, taken without checkpoints, is trained
    varied = tmp_path / "varied"
    main(["compare", str(grammar_corpus), "--out", str(varied), *common,
          "--vary", "kd:temperature=1", "--reuse-from", str(record)])
    err = capsys.readouterr().err
    assert "[seed 0] kd: the same training and evaluation as" in err
    assert "[seed 0] kd temperature=1.0 teacher: training" in err, err
    assert "[seed 0] kd temperature=1.0: training" in err
    assert (varied / "seed-0" / "teacher" / "checkpoints").is_dir()
    report = json.loads((varied / "report.json").read_text())
    assert {a["arm"] for a in report["arms"]} == {"kd", "kd temperature=1.0"}


@pytest.mark.slow
def test_a_comparison_runs_in_pieces_with_only(grammar_corpus, tmp_path, capsys,
                                               monkeypatch):
    """--only trains the arms it names, in every seed, --only-seeds the seeds it names; the
    report covers what finished and says what waits, also when a piece is cut off; --resume
    without them runs the rest, the finished arms left as they are."""
    import minidml.experiments.compare as compare_module
    from minidml.cli.commands import Terminated

    out = tmp_path / "cmp"
    common = ["compare", str(grammar_corpus), "--out", str(out), "--budget", "400k",
              "--students", "2", "--arms", "single,dml", "--suites", "agreement", "--limit",
              "20", "--vocab-size", "400", "--context", "32", "--batch-size", "16", "--tokens",
              "4096", "--warmup", "2", "--seeds", "2", "--quiet"]
    with pytest.raises(SystemExit) as exit_:
        main([*common, "--only", "wml"])
    assert exit_.value.code == 1
    assert "--only wml: not an arm of this comparison; choose among single, dml" in (
        capsys.readouterr().err)
    assert not out.exists()
    real = compare_module._run_arm

    def cut_off(name, arm, changes, arm_dir, *rest):
        if arm_dir.parent.name == "seed-1":  # as a sitting's SIGTERM reaches the 2nd piece
            raise Terminated
        return real(name, arm, changes, arm_dir, *rest)

    monkeypatch.setattr(compare_module, "_run_arm", cut_off)
    with pytest.raises(SystemExit) as exit_:
        main([*common, "--only", "dml"])
    assert exit_.value.code == 143
    err = capsys.readouterr().err
    assert "[seed 0] dml: training" in err and err.rstrip().endswith(
        "interrupted; `minidml compare … --resume` continues from the last checkpoint")
    report = json.loads((out / "report.json").read_text())  # the finished piece's
    assert [(a["arm"], a["seed"]) for a in report["arms"]] == [("dml", 0)]
    assert report["unfinished"] == ["seed 0 single", "seed 1 single", "seed 1 dml"]
    monkeypatch.undo()
    main([*common, "--resume", "--only", "dml"])
    err = capsys.readouterr().err
    assert "[seed 0] dml: finished earlier, reused" in err and "[seed 1] dml: training" in err
    assert "single: training" not in err
    assert not (out / "seed-0" / "single").exists()
    report = json.loads((out / "report.json").read_text())
    assert {(a["arm"], a["seed"]) for a in report["arms"]} == {("dml", 0), ("dml", 1)}
    assert report["unfinished"] == ["seed 0 single", "seed 1 single"]
    assert "not finished yet (a later --resume runs them): seed 0 single, seed 1 single" in (
        out / "report.md").read_text()
    dml = (out / "seed-1" / "dml" / "arm.json").read_bytes()
    # --only-seeds: a seed's piece, alone or with --only
    with pytest.raises(SystemExit) as exit_:
        main([*common, "--resume", "--only-seeds", "2"])
    assert exit_.value.code == 1
    assert "--only-seeds 2: this comparison has seeds 0 to 1" in capsys.readouterr().err
    main([*common, "--resume", "--only", "single", "--only-seeds", "1"])
    err = capsys.readouterr().err
    assert "[seed 1] single: training" in err and "[seed 0] single: training" not in err
    report = json.loads((out / "report.json").read_text())
    assert report["unfinished"] == ["seed 0 single"]
    assert not (out / "seed-0" / "single").exists()
    main([*common, "--resume"])
    err = capsys.readouterr().err
    assert "[seed 1] dml: finished earlier, reused" in err and "[seed 0] single: training" in err
    assert "[seed 1] single: finished earlier, reused" in err
    assert (out / "seed-1" / "dml" / "arm.json").read_bytes() == dml
    report = json.loads((out / "report.json").read_text())
    assert len(report["arms"]) == 4 and report["unfinished"] == []
    assert "not finished yet" not in (out / "report.md").read_text()


def test_variants_are_parsed_with_the_setting_types():
    assert Variant.parse("alpha=0.25,0.75") == (Variant("wml", "alpha", 0.25),
                                                Variant("wml", "alpha", 0.75))
    assert Variant.parse("wml:outer-every=30") == (Variant("wml", "outer_every", 30),)
    assert Variant.parse("hypergrad=first-order")[0].value == "first-order"
    assert Variant.parse("dml:temperature=2")[0] == Variant("dml", "temperature", 2.0)
    assert Variant("wml", "outer_lr", 3.0).name == "wml outer_lr=3.0"
    assert TrainConfig.parse_value("outer_batch_size", "8") == 8
    with pytest.raises(MinidmlError, match="key 'alpha': expected float, got str"):
        CompareConfig(budget=1000, students=2, variants=(Variant("wml", "alpha", "0.25"),))
    for text, needle in (("alpha", "write [ARM:]KEY=VALUE"), ("outer_every=2.5", "takes a int"),
                         ("wml:nonsense=1", "unknown setting 'nonsense'"),
                         ("steps=x", "steps takes a int")):
        with pytest.raises(MinidmlError, match=needle.replace("[", r"\[")):
            Variant.parse(text)


@pytest.mark.slow
def test_resume_reuses_finished_arms_and_finishes_the_others(compared, grammar_corpus,
                                                             capsys, monkeypatch):
    before = json.loads((compared / "report.json").read_text())
    (compared / "seed-0" / "wml" / "arm.json").unlink()  # as if it was cut off while evaluating
    capsys.readouterr()
    # the searched shapes are recorded and kept: a later search may pick others
    recorded = json.loads((compared / "compare.json").read_text())["shapes"]
    wml_config = json.loads((compared / "seed-0" / "wml" / "config.json").read_text())
    assert [{k: c[k] for k in ("n_layers", "d_model", "n_heads", "mlp_ratio")}
            for c in recorded["students"]] == wml_config["config"]["students"]
    import minidml.experiments.compare

    def no_search(*args, **kwargs):
        raise AssertionError("a resumed comparison must not search again")

    monkeypatch.setattr(minidml.experiments.compare, "plan", no_search)
    monkeypatch.setattr(minidml.experiments.compare, "search", no_search)
    main(["compare", str(grammar_corpus), "--out", str(compared), *TINY, "--resume",
          "--device", "cpu"])
    err = capsys.readouterr().err
    for arm in ("single", "kd", "dml", *VARIANTS):
        assert f"[seed 0] {arm}: finished earlier, reused" in err
    # other settings are refused, naming the one that differs; another device is not
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(grammar_corpus), "--out", str(compared), *TINY, "--resume",
              "--lr", "1e-3"])
    assert exit_.value.code == 1
    assert "setting 'compare.train.lr' differs" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the variants it has must stay
        main(["compare", str(grammar_corpus), "--out", str(compared), *TINY[:-2], "--resume"])
    assert "the variant kd temperature=1.0 of" in capsys.readouterr().err
    assert "[seed 0] wml: continuing" in err
    after = json.loads((compared / "report.json").read_text())
    assert [a["models"] for a in after["arms"]] == [a["models"] for a in before["arms"]]
    # the wall time is the run's own, not that of the (instant) resumption
    wml = [next(a for a in report["arms"] if a["arm"] == "wml") for report in (before, after)]
    assert wml[1]["train_seconds"] == wml[0]["train_seconds"] > 0
    # an ablation grows: a new variant is trained, nothing else
    main(["compare", str(grammar_corpus), "--out", str(compared), *TINY, "--resume",
          "--vary", "outer-lr=3"])
    err = capsys.readouterr().err
    assert "wml outer_lr=3.0: training 3 model(s)" in err and err.count(": training ") == 1
    # which models the arms still to come score may change: nothing is trained or scored again
    main(["compare", str(grammar_corpus), "--out", str(compared), *TINY, "--resume",
          "--vary", "outer-lr=3", "--eval-students", "champion"])
    err = capsys.readouterr().err
    assert ": training " not in err and "evaluating" not in err
    grown = json.loads((compared / "report.json").read_text())
    assert [a["arm"] for a in grown["arms"]] == [*ARMS, *VARIANTS, "wml outer_lr=3.0"]
    assert grown["arms"][:-1] == after["arms"]
    saved = json.loads((compared / "compare.json").read_text())["settings"]["compare"]
    assert saved["variants"][-1] == {"arm": "wml", "key": "outer_lr", "value": 3.0}


def test_bad_compare_options_are_one_line_errors(grammar_corpus, tmp_path, capsys):
    cases = [(["--arms", "single,teacherless"], "--arms"),
             (["--arms", "dml,dml"], "'dml,dml': name each once"),
             (["--only", "kd,"], "--only"),
             (["--suites", "agreement,blimpp"], "--suites blimpp: no such suite"),
             (["--data-dir", str(tmp_path / "empty"), "--suites", "blimp"], "--data-dir"),
             (["--budget", "1k"], "--budget"),
             (["--students", "1"], "--students"),
             (["--vary", "alpha"], "write [ARM:]KEY=VALUE"),
             (["--vary", "alpha=lots"], "alpha takes a float, not 'lots'"),
             (["--vary", "context=64"], "context cannot vary"),
             (["--vary", "dml:outer-lr=3"], "only wml learns ω"),
             (["--vary", "single:alpha=0.1"], "no KL term"),
             (["--vary", "kd:alpha=0.1", "--arms", "dml,wml"], "add kd to --arms"),
             (["--vary", "alpha=1.5"], "must be between 0 and 1"),
             (["--vary", "alpha=0.25"], "the wml arm's own setting"),
             (["--vary", "alpha=0.2,0.2"], "asked for twice"),
             (["--curve-suites", "blimpp"], "--curve-suites blimpp: no such suite"),
             (["--curve-words", "1M,0"], "--curve-words"),
             (["--curve-suites", ""], "--curve-suites")]
    for i, (extra, needle) in enumerate(cases):
        out = tmp_path / f"c{i}"
        args = ["compare", str(grammar_corpus), "--out", str(out), *TINY]
        for flag, value in zip(extra[::2], extra[1::2], strict=True):
            j = args.index(flag) if flag in args else None
            if j is None:
                args += [flag, value]
            else:
                args[j + 1] = value
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code != 0 and needle in err[-1] and "Traceback" not in "\n".join(err)
        assert not out.exists()  # refused before anything was trained or written
    # a resumed comparison must keep its settings
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "compare.json").write_text(json.dumps({"settings": {"other": 1}}))
    with pytest.raises(SystemExit) as exit_:
        main(["compare", str(grammar_corpus), "--out", str(tmp_path / "r"), *TINY, "--resume"])
    assert exit_.value.code == 1
    assert "compare.json: unreadable; the comparison is damaged" in capsys.readouterr().err
    # settings that each arm makes for itself cannot come from a file either
    toml = tmp_path / "x.toml"
    toml.write_text('mode = "dml"\n')
    with pytest.raises(SystemExit):
        main(["compare", str(grammar_corpus), "--out", str(tmp_path / "t"), *TINY,
              "--config", str(toml)])
    assert "mode cannot be set" in capsys.readouterr().err


def test_champions_of_several_seeds_stay_in_the_table():
    """Each seed's own champion makes the arm's champion row, whichever student it is."""
    def arm(seed, champion):
        return {"arm": "dml", "seed": seed, "train_flops": 1.0, "train_seconds": 2.0,
                "models": [{"label": f"student-{i}", "n_params": 10, "champion": i == champion,
                            "val_loss": 3.0 + i + seed,
                            "scores": {"blimp": {"score": 0.5 + 0.1 * i, "stderr": 0.01,
                                                 "n_tasks": 67}}} for i in range(2)]}

    config = CompareConfig(budget=1000, students=2, seeds=2, arms=("dml",), suites=("blimp",))
    rows = table(config, [arm(0, 0), arm(1, 1)])
    top = [r for r in rows if r.get("champion_row")]
    assert len(top) == 1 and top[0]["model"] == "champion (student-0 ×1, student-1 ×1)"
    assert top[0]["blimp"]["score"] == pytest.approx(0.55)  # 0.5 in seed 0, 0.6 in seed 1
    assert top[0]["val_loss"] == pytest.approx(4.0)  # 3.0 (seed 0) and 5.0 (seed 1)
    assert not any(r["champion"] for r in rows if not r.get("champion_row"))


def test_the_lowest_validation_loss_and_its_step_are_read_from_each_run(tmp_path):
    """A student that overfits: its lowest validation loss is the one before the turn,
    apart from the last one the champion is chosen on; each model, the ensemble and kd's
    teacher from their own run."""
    def run(name, records):
        (tmp_path / name).mkdir(parents=True)
        (tmp_path / name / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in records) + '{"event": "eval", "st')

    run("seed-0/dml", [{"event": "eval", "step": s, "val_loss": [a, b], "ensemble_val_loss": e}
                       for s, a, b, e in ((10, 5.0, 5.5, 5.1), (20, 4.0, 4.8, 4.2),
                                          (30, 4.6, 4.7, 4.4))]
        + [{"event": "train", "step": 30, "loss": [1.0, 1.0]}])
    run("seed-0/teacher", [{"event": "eval", "step": s, "val_loss": [v]}
                           for s, v in ((10, 4.5), (20, 3.9), (30, float("nan")))])
    models = [{"label": "student-0", "val_loss": 4.6}, {"label": "student-1", "val_loss": 4.7},
              {"label": "ensemble", "val_loss": 4.4}]
    arm = {"arm": "dml", "dir": "seed-0/dml", "models": models,
           "teacher": {"dir": "seed-0/teacher", "models": [{"label": "student-0"}]}}
    got = add_best_validation(arm, tmp_path)
    records = read_metrics(tmp_path / "seed-0/dml/metrics.jsonl")
    assert add_best_validation(arm, tmp_path / "elsewhere", records)["models"] == got["models"]
    assert [(m["best_val_loss"], m["best_val_step"]) for m in got["models"]] == [
        (4.0, 20), (4.7, 30), (4.2, 20)]
    assert got["teacher"]["models"][0]["best_val_step"] == 20  # a NaN evaluation is skipped
    assert "best_val_loss" not in models[0]  # the summary read from arm.json is left alone
    config = CompareConfig(budget=1000, students=2, arms=("dml",), suites=("blimp",))
    for m in got["models"]:
        m |= {"n_params": 1, "champion": m["label"] == "student-0", "scores": {}}
    got.pop("teacher")
    top = table(config, [got | {"train_flops": 1.0, "train_seconds": 1.0}])[0]
    assert (top["val_loss"], top["best_val_loss"], top["best_val_step"]) == (4.6, 4.0, 20)


def test_outer_steps_give_omega_range_and_the_second_order_share(tmp_path):
    """‖c(hypergrad − direct)‖ / ‖c(direct)‖ per outer step, c removing the mean (median and
    largest over the finite steps) and each ω_i's range, read from the run's metrics; an arm
    that learns no ω is left as it is."""
    run = tmp_path / "seed-0" / "wml"
    run.mkdir(parents=True)
    steps = [((0.5, 0.5), (4.0, 5.0), (3.0, 4.0)),  # along (1, 1): cannot move ω
             ((0.6, 0.4), (3.3, 4.4), (3.0, 4.0)),  # centred: 0.05·√2 / 0.5·√2
             ((0.3, 0.7), (6.0, 8.0), (3.0, 4.0)),  # centred: 0.5·√2 / 0.5·√2
             ((0.3, 0.7), (float("nan"), 1.0), (3.0, 4.0))]  # a skipped, non-finite step
    run.joinpath("metrics.jsonl").write_text("".join(
        json.dumps({"event": "omega", "step": 10 * (n + 1), "omega": list(w),
                    "hypergrad": list(h), "direct": list(d), "outer_loss": 1.0}) + "\n"
        for n, (w, h, d) in enumerate(steps)) + json.dumps({"event": "eval", "step": 30}) + "\n")
    arm = {"arm": "wml", "seed": 0, "dir": "seed-0/wml",
           "models": [{"label": "student-0", "omega": 0.3}, {"label": "student-1", "omega": 0.7},
                      {"label": "ensemble"}]}
    records = read_metrics(run / "metrics.jsonl")
    run.joinpath("metrics.jsonl").unlink()  # records read once by the caller are used
    got = add_outer_steps(arm, tmp_path, records)["outer_steps"]
    assert got["n"] == 3
    assert got["omega_range"] == [[0.3, 0.6], [0.4, 0.7]]
    assert got["second_order_share_median"] == pytest.approx(0.1)  # shares 0, 0.1, 1
    assert got["second_order_share_max"] == pytest.approx(1.0)
    (tmp_path / "seed-0" / "dml").mkdir()
    (tmp_path / "seed-0" / "dml" / "metrics.jsonl").write_text(
        json.dumps({"event": "eval", "step": 30}) + "\n")
    dml = {"arm": "dml", "seed": 0, "dir": "seed-0/dml", "models": []}
    assert add_outer_steps(dml, tmp_path) == dml


@pytest.mark.slow
def test_a_comparison_gets_its_pictures(compared, tmp_path, capsys, require_extra):
    require_extra("plot", "matplotlib")
    moved = tmp_path / "moved"  # the report names its runs relative to itself
    shutil.copytree(compared, moved)
    main(["plot", str(moved)])
    names = sorted(p.rsplit("/", 1)[1] for p in capsys.readouterr().out.split())
    assert names == sorted(f"{n}.{e}" for n in ("validation", "scores", "omega", "variants",
                                                 "curves", "paired", "curves-paired")
                           for e in ("png", "svg"))
    svg = (moved / "plots" / "scores.svg").read_text()
    assert svg.count("<g id=\"patch_") >= 6 + 1  # a bar per arm, and the axes' background
    # per variant a bar for its champion; wml's variant has an ensemble bar too
    svg = (moved / "plots" / "variants.svg").read_text()
    assert svg.count("<g id=\"patch_") >= 3 + 1
    # a panel per quantity (validation loss, agreement, glue, macro), a bar per pair of arms
    svg = (moved / "plots" / "paired.svg").read_text()
    report = json.loads((moved / "report.json").read_text())
    pairs = {(r["a"], r["b"]) for r in report["paired"]}
    assert svg.count("<g id=\"patch_") >= 4 * (len(pairs) + 1)
    # the paired differences by words: a panel per curve suite, a labelled line per pair
    svg = (moved / "plots" / "curves-paired.svg").read_text()
    for suite in report["curve_suites"]:
        assert f"<!-- {suite} -->" in svg
    curve_pairs = {(p["a"], p["b"]) for row in report["curves"] for p in row["pairs"]}
    assert curve_pairs and all(f"<!-- {a} − {b} (" in svg for a, b in curve_pairs)


def test_reading_shares_per_model_and_in_total():
    from minidml.experiments.config import reading_shares

    for arm in ("single", "kd", "dml", "wml"):
        assert reading_shares(arm, 4, "per-model") == (1.0, 1.0)
    assert reading_shares("single", 4, "total") == (1.0, 0.0)
    assert reading_shares("kd", 4, "total") == (0.5, 0.5)
    assert reading_shares("wml", 4, "total") == reading_shares("dml", 4, "total") == (0.25, 0.0)
    with pytest.raises(MinidmlError, match="--words"):
        CompareConfig(budget=1000, students=2, words="each")


def test_an_arms_models_together_never_read_more_than_t_in_total():
    """--words total: each model's share of T steps rounded down to whole steps (exact
    fractions), so an arm's models together never read more than T, and by less than one
    step each."""
    from minidml.experiments.compare import arm_steps

    for k in (2, 3, 4, 7):
        config = CompareConfig(budget=1000, students=k, words="total")
        for steps in range(1, 400):
            for arm in ("single", "kd", "dml", "wml"):
                student, teacher = arm_steps(config, arm, steps)
                read = {"single": student, "kd": student + teacher}.get(arm, k * student)
                assert read <= max(steps, k if arm in ("dml", "wml") else 2 if arm == "kd"
                                   else 1), (k, steps, arm)
                assert read > steps - {"kd": 2, "single": 1}.get(arm, k), (k, steps, arm)
        assert arm_steps(config, "wml", k * 3176)[0] == 3176
    per_model = CompareConfig(budget=1000, students=3)
    assert arm_steps(per_model, "kd", 3176) == arm_steps(per_model, "wml", 3176) == (3176, 3176)


@pytest.mark.slow
def test_equal_words_in_total_splits_each_arms_reading(grammar_corpus, tmp_path):
    """--words total: the single student reads T, kd's teacher and student T/2 each, wml's
    K students T/K each; arm.json and the report say so."""
    out = tmp_path / "cmp"
    main(["compare", str(grammar_corpus), "--out", str(out), "--budget", "400k",
          "--students", "3", "--tokens", "48k", "--words", "total", "--arms", "single,kd,wml",
          "--suites", "agreement", "--limit", "20", "--vocab-size", "400", "--context", "32",
          "--batch-size", "16", "--warmup", "2", "--outer-every", "5", "--quiet",
          "--curve-suites", "agreement", "--curve-words", "5k,10k"])
    arms = {a: json.loads((out / "seed-0" / a / "arm.json").read_text())
            for a in ("single", "kd", "wml")}
    per_step = 16 * 32
    steps = arms["single"]["steps"]
    assert steps == 48_000 // per_step and arms["single"]["tokens_total"] == steps * per_step
    assert arms["kd"]["steps"] == arms["kd"]["teacher"]["steps"] == steps // 2
    assert arms["wml"]["steps"] == steps // 3
    assert arms["wml"]["tokens_total"] == 3 * (steps // 3) * per_step
    assert arms["kd"]["tokens_total"] == 2 * (steps // 2) * per_step
    assert all(a["words"] == "total" for a in arms.values())
    md = (out / "report.md").read_text()
    assert "equal words in total" in md
    # the curves count what an arm's models read together, kd's teacher included
    corpus_words = json.loads((out / "seed-0" / "single" / "config.json").read_text()
                              )["words"]["corpus_words"]
    for name, arm in arms.items():
        count = WordCount(corpus_words, json.loads((out / "report.json").read_text())
                          ["corpus"]["tokens"], per_step, 3 if name == "wml" else 1,
                          arm["teacher"]["steps"] * per_step * corpus_words
                          // json.loads((out / "report.json").read_text())["corpus"]["tokens"]
                          if name == "kd" else 0)
        points = {p["milestone"]: p for p in arm["curve"]}
        # a count is reached at the first step whose total reaches it, for each count the
        # arm reads (kd's student starts past its teacher's words)
        want = [c for c in (5_000, 10_000) if count.total(arm["steps"]) >= c
                and c > count.teacher_words]
        assert [m for m in points if m != "end"] == want, name
        for c in want:
            p = points[c]
            assert p["at"] == p["words_total"] == count.total(p["step"]) >= c
            assert count.total(p["step"] - 1) < c
            assert (out / "seed-0" / name / "checkpoints" / f"step-{p['step']:08d}").is_dir()
        assert points["end"]["step"] == arm["steps"]
        # each point is the run's own results file, the champion's score in it
        for p in points.values():
            (f,) = (out / "seed-0" / name / "eval").glob(f"results-step{p['step']}-*.json")
            doc = json.loads(f.read_text())
            assert list(doc["results"]) == [p["champion"]]
            assert doc["groups"][p["champion"]]["agreement"]["score"] == \
                p["scores"]["agreement"]["score"]
    report = json.loads((out / "report.json").read_text())
    end = report["curves"][-1]
    assert end["milestone"] == "end" and set(end["arms"]) == set(arms)
    pair = next(p for p in end["pairs"] if (p["a"], p["b"]) == ("wml", "single"))
    assert pair["agreement"]["mean"] == pytest.approx(
        arms["wml"]["curve"][-1]["scores"]["agreement"]["score"]
        - arms["single"]["curve"][-1]["scores"]["agreement"]["score"])
    assert "## Learning curves by words seen" in md and "read by an arm's models together" in md
    # scoring the curve again reads the points it has: nothing is evaluated twice
    from minidml import load
    from minidml.experiments import curves

    wml = out / "seed-0" / "wml"
    before = sorted((wml / "eval").iterdir())
    run = load(wml)
    count = WordCount(corpus_words, report["corpus"]["tokens"], per_step, 3)
    again = curves.score_points(wml, run, curves.arm_counts((5_000, 10_000), count,
                                                            run.step, "total"), count,
                                "total", ["agreement"], limit=20)
    assert again == arms["wml"]["curve"] and sorted((wml / "eval").iterdir()) == before


@pytest.mark.slow
def test_every_arm_has_its_curve_by_words_seen_per_model(compared):
    report = json.loads((compared / "report.json").read_text())
    for arm in report["arms"]:
        points = arm["curve"]
        assert [p["milestone"] for p in points] == [3_000, 6_000, "end"], arm["arm"]
        assert [p["at"] for p in points] == [p["words"] for p in points]
        assert points[0]["words"] >= 3_000 and points[1]["words"] >= 6_000
        assert points[-1]["step"] == arm["steps"]
    rows = {r["milestone"]: r for r in report["curves"]}
    assert set(rows) == {3_000, 6_000, "end"}
    # every arm at the same words per model, so every pair is compared at every count
    assert {(p["a"], p["b"]) for p in rows[3_000]["pairs"]} >= {("wml", "dml"), ("wml", "kd"),
                                                                 ("wml", "single")}
    md = (compared / "report.md").read_text()
    assert "words seen by each model" in md and "| 3k |" in md and "| 6k |" in md


def test_curve_table_means_and_paired_differences_over_seeds():
    from minidml.experiments.curves import table

    def point(m, score):
        return {"milestone": m, "at": 1_000 if m == "end" else m, "champion": "student-0",
                "scores": {"s": {"score": score, "stderr": 0.01}}}

    scores = {"single": [0.50, 0.52, 0.57], "wml": [0.55, 0.60, 0.60]}
    arms = [{"arm": a, "seed": i, "curve": [point(500, v - 0.1), point("end", v)]}
            for a, vs in scores.items() for i, v in enumerate(vs)]
    rows = table({"arms": arms, "curve_suites": ["s"]})
    assert [r["milestone"] for r in rows] == [500, "end"]
    end = rows[1]
    assert end["arms"]["wml"]["s"]["score"] == pytest.approx(0.5833333)
    assert end["arms"]["wml"]["s"]["stderr"] == pytest.approx(
        statistics.stdev([0.55, 0.60, 0.60]) / 3 ** 0.5)
    (pair,) = end["pairs"]
    diffs = [0.05, 0.08, 0.03]
    assert (pair["a"], pair["b"], pair["seeds"]) == ("wml", "single", [0, 1, 2])
    assert pair["s"]["mean"] == pytest.approx(sum(diffs) / 3)
    sd = (sum((d - sum(diffs) / 3) ** 2 for d in diffs) / 2) ** 0.5
    assert pair["s"]["stderr"] == pytest.approx(sd / 3 ** 0.5)
    # a seed that has no point at a count is left out of that count's pair
    arms[0]["curve"] = arms[0]["curve"][1:]
    first = table({"arms": arms, "curve_suites": ["s"]})[0]
    assert first["pairs"][0]["seeds"] == [1, 2] and first["arms"]["single"]["seeds"] == 2
