"""Crash safety: kill -9 anywhere, non-finite losses, untrusted files, failing disks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import minidml
from minidml import Callback, Shape, TrainConfig
from minidml.errors import MinidmlError
from minidml.rundir import checkpoints

from _helpers import assert_one_line_error, run_cli

KILL_CFG = dict(students=(Shape(1, 32, 2), Shape(1, 48, 2)), mode="wml", outer_every=4,
                context=16, batch_size=8, vocab_size=300, warmup_steps=5, eval_every=15,
                eval_tokens=512, log_every=5, save_every=1, steps=45, precision="fp32")

DRIVER = """
import sys, torch
torch.set_num_threads(1)
import minidml
from minidml import Shape, TrainConfig
cfg = TrainConfig(**eval(sys.argv[3], {"Shape": Shape}))
from pathlib import Path
out = Path(sys.argv[2])
minidml.train(sys.argv[1], out, cfg, resume=out.exists())
"""


def launch(corpus: Path, out: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(corpus), str(out),
                             repr(KILL_CFG)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def tiny_train(corpus: Path, out: Path, steps: int, *extra: str) -> list[str]:
    """The command line of a one-student run small enough to start in seconds."""
    return [sys.executable, "-m", "minidml", "train", str(corpus), "--out", str(out),
            "--students", "1", "--layers", "1", "--width", "32", "--heads", "2",
            "--context", "32", "--batch-size", "4", "--vocab-size", "400", "--steps",
            str(steps), "--log-every", "1", "--eval-every", "10000", "--quiet", *extra]


def final_state(run_dir: Path) -> dict:
    last = checkpoints(run_dir)[-1]
    return {p.name: torch.load(p, weights_only=True) for p in sorted(last.glob("*.pt"))}


def assert_identical(a, b, where="") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            if k not in ("metrics_bytes", "train_seconds"):  # file size, wall time
                assert_identical(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_is_bit_identical(grammar_corpus, tmp_path):
    """SIGKILL a training run at 8 random moments (one during start-up, the rest while it
    trains and writes a checkpoint every step), resume each time; the final weights,
    optimiser states and ω equal those of a run that was never interrupted."""
    env = {**os.environ, "MINIDML_CACHE_DIR": str(tmp_path / "cache")}
    reference = tmp_path / "reference"
    done = launch(grammar_corpus, reference, env)
    assert done.wait(timeout=300) == 0, done.stderr.read()

    rng = random.Random(1234)
    out = tmp_path / "killed"
    kills, at_kill = 0, []
    while kills < 8:
        proc = launch(grammar_corpus, out, env)
        if kills == 0:
            time.sleep(rng.uniform(0.5, 2.0))  # somewhere in start-up or set-up
        else:
            seen = len(checkpoints(out)) and checkpoints(out)[-1].name
            deadline = time.monotonic() + 120
            while proc.poll() is None and time.monotonic() < deadline:
                now = len(checkpoints(out)) and checkpoints(out)[-1].name
                if now and now != seen:
                    break
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 0.08))  # mid-step or mid-checkpoint
        if proc.poll() is not None:  # it finished first: nothing left to interrupt
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        found = checkpoints(out) if out.exists() else []
        at_kill.append(found[-1].name if found else None)
    assert kills >= 7
    # the kills landed at many different points of training, not all in start-up
    assert len({a for a in at_kill if a is not None}) >= 6, at_kill
    last = launch(grammar_corpus, out, env)
    assert last.wait(timeout=300) == 0, last.stderr.read()
    assert_identical(final_state(out), final_state(reference))
    assert not list((out / "checkpoints").glob(".tmp-*"))
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    steps = [r["step"] for r in records if r["event"] == "train"]
    assert steps == sorted(set(steps)) and steps[-1] == KILL_CFG["steps"]  # no duplicates


TINY = dict(students=(Shape(1, 32, 2), Shape(1, 48, 2)), context=16, batch_size=8,
            vocab_size=300, warmup_steps=2, eval_every=100, eval_tokens=512, log_every=1,
            save_every=2, steps=12, precision="fp32")


class PoisonParameter(Callback):
    """Sets one weight of one student to NaN after a given step."""

    def __init__(self, step: int, student: int):
        self.step, self.student = step, student

    def on_step_end(self, trainer, losses):
        if trainer.step == self.step:
            with torch.no_grad():
                trainer.students[self.student].norm.weight[0] = float("nan")


def test_a_non_finite_loss_stops_with_step_and_student_and_keeps_checkpoints(
        grammar_corpus, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(MinidmlError, match=r"step 6: non-finite loss or gradient for "
                                           r"student\(s\) 1;"):
        minidml.train(grammar_corpus, out, TrainConfig(**TINY, mode="single"),
                      callbacks=[PoisonParameter(5, 1)])
    run = minidml.load(out)  # the last good checkpoint: step 4, finite
    assert run.step == 4
    assert all(torch.isfinite(p).all() for s in run.students for p in s.parameters())


class PoisonOutput:
    """A forward hook on one student's final norm that makes its hidden states, and so its
    logits, NaN during a chosen training step."""

    def __init__(self, trainer_steps: set[int]):
        self.steps, self.trainer = trainer_steps, None

    def __call__(self, module, inputs, output):
        if self.trainer is not None and self.trainer.step + 1 in self.steps and module.training:
            return output * float("nan")
        return output


class Attach(Callback):
    def __init__(self, hook):
        self.hook = hook

    def on_train_start(self, trainer):
        self.hook.trainer = trainer
        trainer.students[0].norm.register_forward_hook(self.hook)


def test_skip_drops_non_finite_steps_counts_them_and_training_goes_on(grammar_corpus,
                                                                       tmp_path):
    out = tmp_path / "run"
    hook = PoisonOutput({3, 7})
    run = minidml.train(grammar_corpus, out, TrainConfig(**TINY, mode="wml", outer_every=3,
                                                         on_nonfinite="skip"),
                        callbacks=[Attach(hook)])
    assert run.step == TINY["steps"]
    assert all(torch.isfinite(p).all() for s in run.students for p in s.parameters())
    assert torch.isfinite(run.omega).all() and abs(float(run.omega.sum()) - 1) < 1e-6
    records = [json.loads(line) for line in (out / "metrics.jsonl").open()]
    skipped = [r for r in records if r["event"] == "nonfinite"]
    assert [r["step"] for r in skipped] == [3, 7] and skipped[-1]["skipped_steps"] == 2
    assert skipped[0]["students"] == [0, 1]  # the peer's KL term inherits the NaN
    last = [r for r in records if r["event"] == "train"][-1]
    assert last["skipped_steps"] == 2 and all(map(lambda v: v == v, last["loss"]))


def test_skipped_steps_survive_a_resume(grammar_corpus, tmp_path):
    out = tmp_path / "run"

    class Stop(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.step == 6:
                trainer.should_stop = True

    cfg = TrainConfig(**TINY, on_nonfinite="skip")
    minidml.train(grammar_corpus, out, cfg, callbacks=[Attach(PoisonOutput({3})), Stop()])
    state = torch.load(checkpoints(out)[-1] / "state.pt", weights_only=True)
    assert state["skipped_steps"] == 1
    run = minidml.train(grammar_corpus, out, cfg, resume=True)
    assert run.step == TINY["steps"]


# ----------------------------------------------------------------------------- untrusted files
class Exploit:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_a_weights_file_that_would_run_code_is_refused(tiny_run, tmp_path):
    import pickle
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    for ckpt in checkpoints(run_dir):
        (ckpt / "student-0.pt").write_bytes(pickle.dumps({"embed.weight": Exploit()}))
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(MinidmlError, match=r"student-0\.pt: refused or damaged"):
            minidml.load(run_dir)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("change, match", [
    ({"batch_size": "32"}, r"config\.json: key 'batch_size': expected int"),
    ({"no_such_setting": 1}, r"config\.json: unknown key 'no_such_setting'"),
    ({"lr": -1.0}, r"config\.json: --lr -1\.0: must be a positive number"),
    ({"students": [{"n_layers": 2}]}, r"config\.json: key 'students'"),
])
def test_a_config_with_wrong_types_unknown_keys_or_bad_values_is_refused(
        tiny_run, tmp_path, change, match):
    import shutil

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    meta = json.loads((run_dir / "config.json").read_text())
    meta["config"].update(change)
    (run_dir / "config.json").write_text(json.dumps(meta))
    with pytest.raises(MinidmlError, match=match):
        minidml.load(run_dir)


def test_a_tokenizer_that_does_not_match_the_config_is_refused(tiny_run, tmp_path):
    import shutil

    from minidml import Tokenizer
    from minidml.demo.grammar import sentences

    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run.path, run_dir)
    Tokenizer.train(list(sentences(300, seed=1)), vocab_size=350).save(
        run_dir / "tokenizer.model")
    with pytest.raises(MinidmlError, match=r"tokenizer\.model: not the tokenizer this run"):
        minidml.load(run_dir)


# ----------------------------------------------------------------------------- failing disks
def test_a_full_disk_while_checkpointing_is_one_error_and_the_last_checkpoint_survives(
        grammar_corpus, tmp_path, monkeypatch):
    import errno

    import minidml.rundir as rundir_module

    out = tmp_path / "run"
    real_save = torch.save
    calls = {"n": 0}

    def flaky_save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 7:  # the third checkpoint (3 files each) runs out of space
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(rundir_module.torch, "save", flaky_save)
    with pytest.raises(MinidmlError, match="cannot write checkpoint .*No space left"):
        minidml.train(grammar_corpus, out, TrainConfig(**TINY))
    monkeypatch.setattr(rundir_module.torch, "save", real_save)
    assert [c.name for c in checkpoints(out)] == ["step-00000002", "step-00000004"]
    assert not list((out / "checkpoints").glob(".tmp-*"))
    assert minidml.load(out).step == 4
    run = minidml.train(grammar_corpus, out, TrainConfig(**TINY), resume=True)
    assert run.step == TINY["steps"]


# ----------------------------------------------------------------------------- out of memory
class AllocatesTooMuch(Callback):
    """From step ``at`` on, the first student's final norm asks the allocator for 40 TB,
    which the CPU allocator refuses like any allocation that does not fit."""

    def __init__(self, at: int):
        self.at, self.handle = at, None

    def on_step_end(self, trainer, losses):
        if trainer.step == self.at - 1 and self.handle is None:
            self.handle = trainer.students[0].norm.register_forward_hook(
                lambda *_: torch.empty(10**13, dtype=torch.uint8))


def test_running_out_of_memory_is_one_line_naming_batch_size_and_the_last_checkpoint(
        grammar_corpus, tmp_path, capsys, monkeypatch):
    from minidml.cli.commands import main
    from minidml.model import Student

    out = tmp_path / "run"
    with pytest.raises(MinidmlError) as err:
        minidml.train(grammar_corpus, out, TrainConfig(**TINY), callbacks=[AllocatesTooMuch(5)])
    line = str(err.value)
    assert "step 5: out of memory on cpu" in line and "\n" not in line
    assert "--batch-size (now 8)" in line and "--grad-accum (now 1)" in line
    assert f"{out / 'checkpoints' / 'step-00000004'}" in line  # save_every 2 in TINY
    assert minidml.load(out).step == 4  # the checkpoint named is whole
    # from the command line: one line, exit 1, no traceback
    monkeypatch.setattr(Student, "trunk", lambda self, x: torch.empty(10**13, dtype=torch.uint8))
    with pytest.raises(SystemExit) as exc:
        main(["train", str(grammar_corpus), "--out", str(tmp_path / "fresh"), "--students", "1",
              "--layers", "1", "--width", "32", "--heads", "2", "--context", "16",
              "--vocab-size", "300", "--batch-size", "4", "--grad-accum", "2", "--steps", "2",
              "--compile", "off", "--precision", "fp32"])
    err_text = capsys.readouterr().err
    assert exc.value.code == 1
    lines = err_text.strip().splitlines()
    assert lines[0].startswith("run directory:")  # said when the run starts
    lines = lines[1:]
    assert len(lines) == 1 and "Traceback" not in err_text, err_text
    assert "step 1: out of memory" in lines[0] and "--batch-size (now 4)" in lines[0]
    assert "--grad-accum (now 2)" in lines[0] and "no checkpoint was written yet" in lines[0]


@pytest.mark.slow
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_checkpoint_say_how_to_resume_and_resume(grammar_corpus, tmp_path,
                                                                    sig, code):
    """SIGTERM is taken as Ctrl-C is: the step in hand is checkpointed, one line says how to
    go on, and --resume continues from exactly there."""
    out = tmp_path / "run"
    args = tiny_train(grammar_corpus, out, 400, "--save-every", "10000")
    # a test suite started in the background inherits SIGINT ignored; the child must not
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    metrics, deadline = out / "metrics.jsonl", time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count('"event": "train"') >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    lines = err.strip().splitlines()
    assert proc.returncode == code, err
    assert "--resume" in lines[-1] and "Traceback" not in err
    step = minidml.load(out).step
    assert step >= 3  # the checkpoint of the step in hand, not step 0
    assert step < 400, "the run ended before the signal; nothing was interrupted"
    resumed = subprocess.run([*args, "--resume"], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert minidml.load(out).step == 400


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_mid_step_waits_for_the_step_and_resumes_bit_identically(
        grammar_corpus, tmp_path, sig):
    """Ctrl-C (or SIGTERM, taken as Ctrl-C) while an outer step has set ω and one student has
    stepped but not the other: the step ends first, its checkpoint holds whole steps, and
    the resumed run equals one never interrupted; a second signal stops at once and keeps
    the last whole checkpoint."""
    from minidml.cli.commands import _terminate

    # as the command line has them (a test suite started in the background has SIGINT ignored)
    before = {s: signal.signal(s, h) for s, h in ((signal.SIGINT, signal.default_int_handler),
                                                  (signal.SIGTERM, _terminate))}
    settings = dict(KILL_CFG, outer_every=1, save_every=100, steps=12)

    class SignalMidStep(Callback):
        def __init__(self, at: int, times: int):
            self.at, self.times = at, times

        def on_train_start(self, trainer):
            opt = trainer.optimizers[1]
            step = opt.step

            def interrupted(*args, **kwargs):
                if trainer.step == self.at - 1:  # the step in hand is self.at
                    for _ in range(self.times):
                        os.kill(os.getpid(), sig)
                return step(*args, **kwargs)

            opt.step = interrupted

    try:
        reference = minidml.train(grammar_corpus, tmp_path / "reference", **settings)
        out = tmp_path / "run"
        with pytest.raises(KeyboardInterrupt):
            minidml.train(grammar_corpus, out, callbacks=[SignalMidStep(5, 1)], **settings)
        assert minidml.load(out).step == 5  # the step in hand, whole
        minidml.train(grammar_corpus, out, resume=True, **settings)
        assert_identical(final_state(out), final_state(reference.path))
        # asked twice: at once, mid-step; no checkpoint of a torn step is written
        torn = tmp_path / "torn"
        with pytest.raises(KeyboardInterrupt):
            minidml.train(grammar_corpus, torn, callbacks=[SignalMidStep(5, 2)], **settings)
        assert not checkpoints(torn)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_a_run_recorded_before_a_setting_existed_resumes(grammar_corpus, tmp_path):
    """config.json of a run from before `optimizer` (and the corpus settings) existed: its
    resumption takes what was done then (AdamW, ...) and is not refused for differing from
    today's defaults."""
    from minidml.launch import LEGACY

    class StopAt3(Callback):
        def on_step_end(self, trainer, losses):
            trainer.should_stop = trainer.step >= 3

    settings = dict(KILL_CFG, steps=6, save_every=3, **LEGACY)
    out = tmp_path / "old"
    minidml.train(grammar_corpus, out, callbacks=[StopAt3()], **settings)
    meta = json.loads((out / "config.json").read_text())
    for key in LEGACY:
        del meta["config"][key]
    (out / "config.json").write_text(json.dumps(meta))
    run = minidml.train(grammar_corpus, out, resume=True, **{k: v for k, v in settings.items()
                                                             if k not in LEGACY})
    assert run.step == 6 and run.config.optimizer == "adamw"


def test_force_keeps_the_run_it_would_replace_until_the_new_one_can_start(grammar_corpus,
                                                                           tmp_path):
    """--force over a finished run whose new settings fail during set-up (a context longer
    than the corpus allows): the old run is untouched; once the set-up succeeds, replaced."""
    out = tmp_path / "run"
    minidml.train(grammar_corpus, out, **dict(KILL_CFG, steps=3))
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
              if p.is_file() and p.name != ".lock"}
    with pytest.raises(MinidmlError, match="--context"):
        minidml.train(grammar_corpus, out, force=True, **dict(KILL_CFG, steps=3,
                                                              context=10**7))
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*")
             if p.is_file() and p.name != ".lock"}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing staged is left
    run = minidml.train(grammar_corpus, out, force=True, **dict(KILL_CFG, steps=4))
    assert run.step == 4 and minidml.load(out).step == 4
    assert json.loads((out / "config.json").read_text())["config"]["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]


def test_odd_out_paths_are_one_line_naming_them(grammar_corpus, tmp_path, capsys):
    """A symbolic link to nothing, a file, a path under a file: one line naming --out, before
    any work, and nothing made; a name with glob characters is a name like any other."""
    base = ["train", grammar_corpus, "--students", "1", "--layers", "1", "--width", "32",
            "--heads", "2", "--context", "16", "--batch-size", "4", "--vocab-size", "300",
            "--steps", "2", "-q"]
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for out, needles in ((dangling, ("a symbolic link to nothing", "nowhere")),
                         (a_file, ("exists and is not a directory",)),
                         (a_file / "sub", (f"{a_file} is a file",))):
        code, _, err = run_cli(*base, "--out", out, capsys=capsys)
        assert_one_line_error(code, err, f"--out {out}", *needles)
        assert ".starting-" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "dangling"]
    odd = tmp_path / "run[1]"
    code, _, err = run_cli(*base, "--out", odd, capsys=capsys)
    assert code == 0, err
    code, _, err = run_cli(*base, "--out", odd, capsys=capsys)
    assert_one_line_error(code, err, f"--out {odd}", "already exists")


def test_a_run_inside_its_corpus_directory_is_refused(grammar_corpus, tmp_path, capsys):
    """Its files would be read as text by the next run on that directory: one line, nothing
    made, for a run and for a comparison."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_bytes(grammar_corpus.read_bytes())
    for args in (["train", corpus, "--out", corpus / "run", "--steps", "2"],
                 ["compare", corpus, "--out", corpus / "sub" / "cmp", "--budget", "400k",
                  "--tokens", "1k"]):
        code, _, err = run_cli(*args, capsys=capsys)
        assert_one_line_error(code, err, "inside the corpus directory", str(corpus))
    assert sorted(p.name for p in corpus.iterdir()) == ["a.txt"]


def test_one_writer_per_run_directory(grammar_corpus, tmp_path):
    """A second train, --resume or --force on a directory another process trains in is one
    line naming that process; after a kill -9 the lock is gone and the next writer takes it."""
    from minidml.lock import LOCK_NAME, holder

    out = tmp_path / "run"
    args = tiny_train(grammar_corpus, out, 2000, "--save-every", "5")
    first = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not checkpoints(out):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read()
            time.sleep(0.1)
        assert holder(out) == first.pid
        config = (out / "config.json").read_text()
        for extra in (["--seed", "1", "--steps", "10"], ["--resume"], ["--force"]):
            second = subprocess.run([*args, *extra], capture_output=True, text=True,
                                    timeout=120)
            lines = second.stderr.strip().splitlines()
            assert second.returncode != 0 and len(lines) == 1, second.stderr
            assert f"pid {first.pid}" in lines[0] and str(out) in lines[0], lines[0]
        assert (out / "config.json").read_text() == config  # untouched
        assert first.poll() is None  # and the first goes on
    finally:
        first.kill()
        first.wait()
    assert holder(out) is None and (out / LOCK_NAME).exists()  # the kernel let go
    args[args.index("--steps") + 1] = "3"
    again = subprocess.run([*args, "--force"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr  # the next writer simply takes it
    assert minidml.load(out).step == 3


def test_a_refused_run_leaves_no_lock_behind(grammar_corpus, tmp_path):
    from minidml.lock import LOCK_NAME

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(MinidmlError, match="already exists"):
        minidml.train(grammar_corpus, taken, TrainConfig(**KILL_CFG))
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]
    assert not (tmp_path / "new").exists()
    with pytest.raises(MinidmlError):
        minidml.train(grammar_corpus, tmp_path / "new", TrainConfig(**KILL_CFG), resume=True)
    assert not (tmp_path / "new").exists() or not (tmp_path / "new" / LOCK_NAME).exists()


def test_hand_edited_runs_are_one_line_naming_what_is_wrong(tiny_run, tmp_path):
    """A config.json field of the wrong type, a state.pt without its step (a reader stops
    with one line; a resumed run falls back), and a copy beside the checkpoints (ignored)."""
    import shutil

    from minidml.cli.commands import main
    from minidml.rundir import checkpoint_steps

    edited = tmp_path / "edited"
    shutil.copytree(tiny_run.path, edited)
    meta = json.loads((edited / "config.json").read_text())
    (edited / "config.json").write_text(json.dumps({**meta, "tokenizer": None}))
    with pytest.raises(MinidmlError, match=r"config.json: field 'tokenizer' must be a table, "
                                           r"not null"):
        minidml.load(edited)
    copied = tmp_path / "copied"
    shutil.copytree(tiny_run.path, copied)
    newest = checkpoints(copied)[-1]
    shutil.copytree(newest, newest.with_name(newest.name + ".bak"))
    assert checkpoint_steps(copied) == checkpoint_steps(tiny_run.path)
    assert minidml.load(copied).step == tiny_run.step
    stepless = tmp_path / "stepless"
    shutil.copytree(tiny_run.path, stepless)
    state_file = checkpoints(stepless)[-1] / "state.pt"
    state = torch.load(state_file, weights_only=True)
    del state["step"]
    torch.save(state, state_file)
    with pytest.raises(MinidmlError, match=r"state.pt: no valid 'step'; the checkpoint is "
                                           r"damaged"):
        minidml.load(stepless)
    with pytest.raises(SystemExit) as e:
        main(["eval", str(stepless), "--suite", "agreement", "--limit", "4", "-q"])
    assert e.value.code != 0


def test_an_eval_file_with_text_that_is_not_unicode_names_file_and_line(tmp_path):
    from minidml.evaluation.suite import read_jsonl

    path = tmp_path / "pairs.jsonl"
    path.write_text('{"good": "fine", "bad": "also"}\n{"good": "a\\udc80b", "bad": "x"}\n')
    with pytest.raises(MinidmlError, match=rf"^{path}:2: field 'good' holds text that is not "
                                           "valid Unicode"):
        read_jsonl(path, ["good", "bad"])


def test_a_checkpoint_rotated_away_while_read_is_read_whole_or_not_at_all(tiny_run, tmp_path,
                                                                           monkeypatch):
    """Readers never see half a checkpoint: one rotated away after its files were opened is
    still read whole; one gone before is retried with the newest (or, asked by step, one
    line)."""
    import shutil

    from minidml import rundir

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    newest = checkpoints(run)[-1]
    shutil.copytree(newest, newest.with_name("step-00000001"))  # an older one to fall to
    loads = []
    real_load = torch.load

    def rotating(f, *args, **kwargs):  # training rotates the checkpoint mid-read
        if not loads:
            rundir._remove_checkpoint(newest)
        loads.append(f)
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", rotating)
    got = minidml.load(run)
    assert got.step == tiny_run.step and not newest.exists()
    monkeypatch.setattr(torch, "load", real_load)
    for a, b in zip(got.students, tiny_run.students, strict=True):
        for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(x, y)
    assert list((run / "checkpoints").iterdir()) == [*checkpoints(run)]  # nothing left over
    older = checkpoints(run)[-1]
    gone = iter([run / "checkpoints" / "step-99999999", older])  # rotated between list and read
    monkeypatch.setattr(rundir, "latest_checkpoint", lambda path: next(gone))
    assert minidml.load(run).step == tiny_run.step and older.name == "step-00000001"
    monkeypatch.setattr(rundir, "checkpoint_steps", lambda path: [99999999])
    with pytest.raises(MinidmlError, match=r"--step 99999999: its checkpoint .* was removed "
                                           r"while being read"):
        minidml.load(run, step=99999999)


def test_memory_errors_and_prompts_that_are_not_utf8_are_one_line(tiny_run, monkeypatch,
                                                                  capsys):
    from minidml.cli.commands import main
    from minidml.evaluation import plugins

    def exhausted():
        raise MemoryError

    monkeypatch.setattr(plugins, "suites", exhausted)
    with pytest.raises(SystemExit) as e:
        main(["suites"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 1 and len(err) == 1 and err[0].startswith("error: out of memory")
    with pytest.raises(SystemExit) as e:  # Latin-1 bytes from the shell: a lone surrogate
        main(["generate", str(tiny_run.path), "--prompt", "caf\udce9", "--max-tokens", "2"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and "--prompt" in err[0] and "UTF-8" in err[0]


def test_eval_of_every_step_skips_a_checkpoint_rotated_away_meanwhile(tiny_run, tmp_path,
                                                                     monkeypatch, capsys):
    import shutil

    from minidml import rundir
    from minidml.cli.commands import main

    run = tmp_path / "run"
    shutil.copytree(tiny_run.path, run)
    newest = checkpoints(run)[-1]
    shutil.copytree(newest, newest.with_name("step-00000001"))
    real = rundir.load

    def rotated_first(path, device="cpu", step=None):
        if step == 1:  # training rotates it away between the listing and the reading
            rundir._remove_checkpoint(Path(path) / "checkpoints" / "step-00000001")
        return real(path, device, step)

    monkeypatch.setattr(rundir, "load", rotated_first)
    main(["eval", str(run), "--suite", "agreement", "--limit", "4", "--step", "all", "-q"])
    err = capsys.readouterr().err
    assert "step 1: its checkpoint was rotated away" in err
    assert [p.name.split("-")[1] for p in (run / "eval").glob("results-step*.json")] == [
        f"step{tiny_run.step}"]


def _big_corpus(path: Path) -> Path:
    """About 6 MB of made-up words: a second or so of tokenising, for a signal to land in."""
    import random

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 8)))
             for _ in range(3000)]
    with path.open("w", encoding="utf-8") as f:
        for _ in range(100_000):
            f.write(" ".join(rng.choices(words, k=12)) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_run_stopped_while_tokenising_leaves_nothing_behind(grammar_corpus, tmp_path, sig):
    """SIGTERM while the corpus is tokenised: exit 143 with one line, and neither a run
    directory nor a cache file is left. SIGKILL (as an allocator's abort, which nothing can
    catch): no run directory either, and the next run of that name starts cleanly, removing
    what the dead one had begun."""
    corpus = _big_corpus(tmp_path / "big.txt")
    cache, out = tmp_path / "cache", tmp_path / "run"
    env = {**os.environ, "MINIDML_CACHE_DIR": str(cache)}
    args = tiny_train(corpus, out, 2, "--vocab-size", "300")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 300
    while not list(cache.rglob(".tokens-*.tmp")):  # tokenising has begun
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.02)
    assert not out.exists()  # the run directory is not made before the run can start
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert not out.exists()
    if sig == signal.SIGTERM:
        lines = err.strip().splitlines()
        assert proc.returncode == 143 and len(lines) == 1 and "Traceback" not in err, err
        assert not list(tmp_path.glob(".run.*"))  # nor its temporary directory
        assert not [p for p in cache.rglob("*") if p.is_file()]  # nor anything in the cache
        return
    assert proc.returncode == -signal.SIGKILL
    again = subprocess.run(tiny_train(grammar_corpus, out, 2), env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert minidml.load(out).step == 2
    assert not list(tmp_path.glob(".run.*"))  # the dead run's temporary directory is gone
    assert not list(cache.rglob("*.tmp"))  # and its half-written cache file


def test_an_error_becomes_one_line_of_a_message():
    from minidml.errors import describe, one_line

    # the first line that is not blank, its white space collapsed, cut with a mark
    assert one_line("\n  \n  disk   full\tnow \n second line") == "disk full now"
    assert one_line("") == "" and one_line("\n \n") == ""
    cut = one_line("x" * 300, limit=50)
    assert len(cut) == 50 and cut.endswith("…") and one_line("x" * 50, limit=50) == "x" * 50
    assert one_line("x" * 300) == "x" * 300  # cut only when asked
    # an exception: its type and that line; the library's own message alone; a bare type
    assert describe(ValueError("bad\nvalue")) == "ValueError: bad"
    assert describe(MinidmlError("--steps: give a number")) == "--steps: give a number"
    assert describe(KeyError()) == "KeyError" and describe(MinidmlError()) == "MinidmlError"
    assert describe(OSError(28, "No space left on device")) == (
        "OSError: [Errno 28] No space left on device")
