"""The command line: bad input gets one line, a non-zero exit and no partial files."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time

import pytest

from minidml.demo.grammar import write_corpus

from _helpers import assert_one_line_error, run_cli

FAST = ["--students", "2", "--layers", "1", "--width", "32", "--heads", "2", "--context", "16",
        "--batch-size", "8", "--vocab-size", "320", "--steps", "4", "--eval-every", "2",
        "--warmup", "1", "--quiet"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("c") / "corpus.txt", 1500, seed=1)


def bad_corpora(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "blank.txt").write_text("  \n\n \t\n")
    (tmp_path / "binary.bin").write_bytes(b"hello\x00\x01\x02world\n")
    (tmp_path / "latin1.txt").write_bytes("good line\ncaf\xe9\n".encode("latin-1"))
    return {
        "missing": (tmp_path / "nope.txt", "no such file"),
        "empty_dir": (tmp_path / "empty_dir", "no text files"),
        "blank": (tmp_path / "blank.txt", "no text"),
        "binary": (tmp_path / "binary.bin", "binary"),
        "latin1": (tmp_path / "latin1.txt", "byte offset 13"),
    }


@pytest.mark.parametrize("case", ["missing", "empty_dir", "blank", "binary", "latin1"])
def test_bad_corpus_is_one_line_and_leaves_nothing(case, tmp_path, capsys):
    path, needle = bad_corpora(tmp_path)[case]
    out = tmp_path / "run"
    code, _, err = run_cli("train", path, "--out", out, *FAST, capsys=capsys)
    assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_invalid_utf8_can_be_replaced(tmp_path, corpus, capsys):
    text = corpus.read_bytes() + "caf\xe9 au lait\n".encode("latin-1")
    (tmp_path / "mixed.txt.gz").write_bytes(gzip.compress(text))
    code, out, err = run_cli("train", tmp_path / "mixed.txt.gz", "--out", tmp_path / "run",
                             *FAST, "--encoding-errors", "replace", capsys=capsys)
    assert code == 0, err
    assert (tmp_path / "run/config.json").exists()


@pytest.mark.parametrize("option,value,needle", [
    ("--steps", "0", "--steps"), ("--lr", "-1", "--lr"), ("--batch-size", "0", "--batch-size"),
    ("--students", "-2", "--students"), ("--tokens", "abc", "--tokens"),
    ("--alpha", "1.5", "--alpha"), ("--width", "32,0", "--width"),
])
def test_bad_numbers(option, value, needle, corpus, tmp_path, capsys):
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *FAST, option, value,
                           capsys=capsys)
    assert code == 2
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_heads_must_divide_width(corpus, tmp_path, capsys):
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *FAST, "--heads", "3",
                           capsys=capsys)
    assert_one_line_error(code, err, "n_heads=3")
    assert not (tmp_path / "r").exists()


def test_vocab_too_large_suggests_a_size(corpus, tmp_path, capsys):
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *FAST,
                           "--vocab-size", "60000", capsys=capsys)
    assert_one_line_error(code, err, "--vocab-size 60000", "use --vocab-size")
    suggested = err.split("use --vocab-size ")[1].split()[0]
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *FAST,
                           "--vocab-size", suggested, capsys=capsys)
    assert code == 0, err


def test_context_longer_than_data(corpus, tmp_path, capsys):
    small = tmp_path / "small.txt"
    small.write_text("".join(corpus.read_text().splitlines(keepends=True)[:200]))
    auto_vocab = [a for a in FAST if a not in ("--vocab-size", "320")]
    code, _, err = run_cli("train", small, "--out", tmp_path / "r", *auto_vocab,
                           "--context", "4096", capsys=capsys)
    assert_one_line_error(code, err, "--context 4096", "or less")
    assert not (tmp_path / "r").exists()


def test_existing_and_unwritable_output(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", corpus, "--out", out, *FAST, capsys=capsys)[0] == 0
    before = sorted(p.name for p in out.rglob("*"))
    code, _, err = run_cli("train", corpus, "--out", out, *FAST, capsys=capsys)
    assert_one_line_error(code, err, "already exists", "--resume", "--force")
    assert sorted(p.name for p in out.rglob("*")) == before
    assert run_cli("train", corpus, "--out", out, *FAST, "--force", capsys=capsys)[0] == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli("train", corpus, "--out", blocker / "sub", *FAST, capsys=capsys)
    assert_one_line_error(code, err, "--out")


def test_resume_refuses_a_different_config_and_continues_the_same(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", corpus, "--out", out, *FAST, capsys=capsys)[0] == 0
    code, _, err = run_cli("train", corpus, "--out", out, *FAST, "--lr", "0.01", "--resume",
                           capsys=capsys)
    assert_one_line_error(code, err, "'lr'", "differs")
    code, _, err = run_cli("train", corpus, "--out", out, "--quiet", "--steps", "6",
                           "--resume", capsys=capsys)
    assert_one_line_error(code, err, "'steps'")
    # options left out on resume come from the run itself
    cfg = json.loads((out / "config.json").read_text())["config"]
    assert cfg["steps"] == 4 and cfg["students"][0]["d_model"] == 32
    code, out_text, err = run_cli("train", corpus, "--out", out, "--quiet", "--resume",
                                  capsys=capsys)
    assert code == 0, err


def test_toml_config_is_overridden_by_options(corpus, tmp_path, capsys):
    toml = tmp_path / "c.toml"
    toml.write_text('lr = 0.004\nseed = 7\n[[students]]\nn_layers = 1\nd_model = 32\n'
                    'n_heads = 2\n')
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *FAST[4:], "--config", toml,
                           "--seed", "3", capsys=capsys)
    assert code == 0, err
    cfg = json.loads((tmp_path / "r/config.json").read_text())["config"]
    assert (cfg["lr"], cfg["seed"], len(cfg["students"])) == (0.004, 3, 1)
    toml.write_text("lr = 'fast'\n")
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "r2", *FAST, "--config", toml,
                           capsys=capsys)
    assert_one_line_error(code, err, "'lr'")


def test_a_budget_and_explicit_shapes_are_one_line_whatever_gives_them(corpus, tmp_path,
                                                                       capsys):
    budget, students, both = (tmp_path / f"{name}.toml" for name in ("b", "s", "bs"))
    budget.write_text("budget = 400000\n")
    students.write_text("[[students]]\nn_layers = 1\nd_model = 32\nn_heads = 2\n")
    both.write_text(budget.read_text() + students.read_text())
    unshaped = FAST[8:]  # no --students, --layers, --width, --heads
    for args, needles in [
        (["--config", budget, "--layers", "1"], (f"budget in {budget}", "--layers")),
        (["--config", students, "--budget", "400k"], ("--budget", f"students in {students}")),
        (["--config", both], (f"budget in {both}", f"students in {both}")),
        (["--budget", "400k", "--width", "32", "--mlp-ratio", "2"], ("--budget",
                                                                     "--width/--mlp-ratio")),
    ]:
        code, _, err = run_cli("train", corpus, "--out", tmp_path / "r", *unshaped, *args,
                               capsys=capsys)
        assert_one_line_error(code, err, *needles, "give one or the other")
        assert not (tmp_path / "r").exists()
    # resumed, a budget run keeps the shapes its budget chose: shapes given now are refused
    out = tmp_path / "budget-run"
    code, _, err = run_cli("train", corpus, "--out", out, *unshaped, "--students", "2",
                           "--config", budget, capsys=capsys)
    assert code == 0, err
    for args, needle in [(["--layers", "2"], "drop --layers"),
                         (["--config", students], f"remove students from {students}")]:
        code, _, err = run_cli("train", corpus, "--out", out, "--resume", "--quiet", *args,
                               capsys=capsys)
        assert_one_line_error(code, err, needle, f"budget (in {out / 'config.json'})")


@pytest.mark.parametrize("name", ["meta", "xla", "cpu:1"])
def test_every_command_refuses_a_device_that_is_none_of_the_choices(name, tiny_run, capsys):
    for args in (["generate", tiny_run.path], ["eval", tiny_run.path, "--suite", "agreement"],
                 ["search", "--budget", "10M"]):
        code, out, err = run_cli(*args, "--device", name, capsys=capsys)
        assert_one_line_error(code, err, f"--device {name}", "auto, cpu, cuda, cuda:N or mps")
        assert out == ""  # no text, no scores, no measured peak


def test_generate_and_entry_point(corpus, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", corpus, "--out", out, *FAST, capsys=capsys)[0] == 0
    code, text, err = run_cli("generate", out, "--prompt", "The", "-n", "2", "--max-tokens", "5",
                              capsys=capsys)
    assert code == 0 and len(text.strip().splitlines()) >= 1
    assert all(line.startswith("The") for line in text.strip().splitlines())
    code, _, err = run_cli("generate", out, "--student", "5", capsys=capsys)
    assert_one_line_error(code, err, "--student 5")
    proc = subprocess.run([sys.executable, "-m", "minidml", "train", str(tmp_path / "nope")],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1


def test_every_kept_checkpoint_can_be_evaluated(corpus, tmp_path, capsys):
    """--keep-checkpoints 0 keeps them all; eval --step N, or all, evaluates them (one
    results file each, recording its step); a step without a checkpoint is one line."""
    out = tmp_path / "run"
    args = [a if a != "4" else "6" for a in FAST]  # 6 steps
    assert run_cli("train", corpus, "--out", out, *args, "--save-every", "2",
                   "--keep-checkpoints", "0", capsys=capsys)[0] == 0
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step-00000002", "step-00000004", "step-00000006"]
    code, text, err = run_cli("eval", out, "--suite", "agreement", "--limit", "2", "--step",
                              "all", "--quiet", capsys=capsys)
    assert code == 0, err
    files = sorted((out / "eval").glob("results-step*.json"))
    assert [json.loads(f.read_text())["step"] for f in files] == [2, 4, 6]
    assert [ln for ln in text.splitlines() if ln.startswith("step ")] == [
        "step 2:", "step 4:", "step 6:"]
    time.sleep(1.1)  # results are stamped to the second
    assert run_cli("eval", out, "--suite", "agreement", "--limit", "2", "--quiet",
                   capsys=capsys)[0] == 0  # the latest checkpoint's file names its step too
    assert len(list((out / "eval").glob("results-step6-*.json"))) == 2
    code, _, err = run_cli("eval", out, "--suite", "agreement", "--limit", "2", "--step", "4",
                           "--output", tmp_path / "r4.json", "--quiet", capsys=capsys)
    assert code == 0 and json.loads((tmp_path / "r4.json").read_text())["step"] == 4
    code, _, err = run_cli("eval", out, "--suite", "agreement", "--step", "3", capsys=capsys)
    assert_one_line_error(code, err, "--step 3", "2, 4, 6")
    code, _, err = run_cli("eval", out, "--suite", "agreement", "--step", "soon", capsys=capsys)
    assert_one_line_error(code, err, "--step 'soon'")
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "x", *FAST, "--steps", "4",
                           "--max-time", "10m", capsys=capsys)
    assert_one_line_error(code, err, "--steps and --max-time")
    code, _, err = run_cli("train", corpus, "--out", tmp_path / "y", *FAST, "--max-time",
                           "soon", capsys=capsys)
    assert code == 2 and "is not a duration" in err and "Traceback" not in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
