"""Distributed training (torchrun, gloo on the CPU) reproduces a single process.

Jobs run as real subprocesses on 127.0.0.1: ``python -m torch.distributed.run ... -m minidml
train`` for the command line, and plain processes given torchrun's environment (no agent that
would kill the survivors) for the failure test.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import minidml
from minidml import Shape, TrainConfig
from minidml.distributed import Comm, PeerFailure, Placement, reports
from minidml.errors import MinidmlError
from minidml.rundir import checkpoints, read_metrics

from _helpers import optimizer_states

SETTINGS = dict(students=(Shape(1, 32, 2), Shape(1, 48, 2)), mode="wml", hypergrad="exact",
                outer_every=3, context=32, batch_size=8, vocab_size=400, warmup_steps=2,
                lr=3e-3, steps=12, log_every=3, eval_every=6, eval_tokens=1024, save_every=6,
                device="cpu", precision="fp32")
TOL = 1e-5


def toml(settings: dict) -> str:
    lines = []
    for key, value in settings.items():
        if key == "students":
            shapes = ", ".join(f"{{n_layers = {s.n_layers}, d_model = {s.d_model}, n_heads = "
                               f"{s.n_heads}}}" for s in value)
            lines.append(f"students = [{shapes}]")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def torchrun(n: int, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={n}",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "minidml",
           "train", *args, "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env())


def train_cli(n: int, corpus: Path, out: Path, tmp: Path, settings: dict = SETTINGS,
              *extra: str) -> subprocess.CompletedProcess:
    cfg = tmp / f"settings-{out.name}.toml"
    cfg.write_text(toml(settings))
    done = torchrun(n, str(corpus), "--out", str(out), "--config", str(cfg), *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def assert_same_run(a: Path, b: Path, tol: float = TOL) -> None:
    """Same tokenizer, step, ω, weights, optimiser states and evaluations, within ``tol``."""
    ra, rb = minidml.load(a), minidml.load(b)
    assert ra.tokenizer.sha256 == rb.tokenizer.sha256
    assert ra.step == rb.step
    torch.testing.assert_close(ra.omega, rb.omega, rtol=0, atol=tol)
    for sa, sb in zip(ra.students, rb.students, strict=True):
        for (name, x), y in zip(sa.state_dict().items(), sb.state_dict().values(), strict=True):
            torch.testing.assert_close(x, y, rtol=0, atol=tol, msg=name)
    state_a, state_b = (torch.load(checkpoints(p)[-1] / "state.pt", weights_only=True)
                        for p in (a, b))
    assert state_a["step"] == state_b["step"]
    for oa, ob in zip(state_a["optimizers"], state_b["optimizers"], strict=True):
        pa, pb = optimizer_states(oa), optimizer_states(ob)
        assert len(pa) == len(pb) > 0
        for sa, sb in zip(pa, pb, strict=True):
            assert sa.keys() == sb.keys()
            for key in sa:
                torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=tol, msg=key)
    evals = [[r for r in read_metrics(p / "metrics.jsonl") if r["event"] == "eval"]
             for p in (a, b)]
    assert len(evals[0]) == len(evals[1]) > 0
    for ea, eb in zip(*evals, strict=True):
        assert ea["step"] == eb["step"] and ea["val_tokens"] == eb["val_tokens"]
        assert ea["val_loss"] == pytest.approx(eb["val_loss"], abs=tol)
        assert ea["ensemble_val_loss"] == pytest.approx(eb["ensemble_val_loss"], abs=tol)


@pytest.fixture(scope="module")
def reference(grammar_corpus, tmp_path_factory) -> Path:
    """The single-process run every distributed run must reproduce."""
    run = minidml.train(grammar_corpus, tmp_path_factory.mktemp("ref") / "run",
                        TrainConfig(**SETTINGS))
    assert not torch.distributed.is_initialized()  # a plain process starts no process group
    assert json.loads((run.path / "config.json").read_text())["world_size"] == 1
    assert not torch.allclose(run.omega, torch.full((2,), 0.5))  # ω was learned
    return run.path


@pytest.fixture(scope="module")
def run2(grammar_corpus, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    tmp = tmp_path_factory.mktemp("w2")
    return tmp / "run", train_cli(2, grammar_corpus, tmp / "run", tmp)


# ----------------------------------------------------------------------------- unit
def test_placement_balances_parameters_and_checks_the_world_size():
    p = Placement.plan([10, 60, 30, 50], 2)  # largest first onto the least loaded rank
    assert (p.peers, p.dp) == (2, 1)
    # 60 → rank 0, 50 → rank 1, 30 → rank 1 (50 < 60), 10 → rank 0 (60 < 80)
    assert p.students_of(0) == (0, 1) and p.students_of(1) == (2, 3)
    assert p.slot == (0, 1, 0, 1) and p.max_per_rank == 2
    mesh = Placement.plan([5, 5], 6)  # 3 data-parallel replicas of each student
    assert (mesh.peers, mesh.dp, mesh.owner) == (2, 3, (0, 1))
    with pytest.raises(MinidmlError, match=r"world size 3: with 2 students .* multiple of 2"):
        Placement.plan([5, 5], 3)
    alone = Placement.plan([5, 5, 5], 1)
    assert alone.students_of(0) == (0, 1, 2)


def test_a_world_of_one_hands_everything_back(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    comm = Comm().place([3, 2], torch.device("cpu"), (8,))
    x = torch.randn(4, 5)
    assert comm.shard(x) is x and comm.local == (0, 1) and comm.is_main
    tensors = [torch.randn(3), torch.randn(3)]
    assert all(a is b for a, b in zip(comm.gather_students(tensors), tensors, strict=True))
    stats, finite = comm.step_summary(torch.tensor([[1.0, float("nan")]]),
                                      torch.tensor([1.0, 2.0]))
    assert finite.tolist() == [True, False]
    assert comm.on_main(lambda: 7) == 7 and comm.any(True) and not comm.any(False)
    assert reports(MinidmlError("x")) and reports(PeerFailure("y", quiet=True))


@pytest.mark.parametrize("text", ["15m", "0", "-5", "nan", "inf", ""])
def test_a_collective_timeout_that_is_no_positive_number_is_one_line(monkeypatch, text):
    from minidml.distributed import TIMEOUT_S, collective_timeout

    monkeypatch.delenv("MINIDML_DIST_TIMEOUT", raising=False)
    assert collective_timeout() == TIMEOUT_S
    monkeypatch.setenv("MINIDML_DIST_TIMEOUT", "120")
    assert collective_timeout() == 120.0
    monkeypatch.setenv("MINIDML_DIST_TIMEOUT", text)
    with pytest.raises(MinidmlError, match=rf"MINIDML_DIST_TIMEOUT={text}: give a positive "
                                           r"number of seconds"):
        collective_timeout()


def test_under_torchrun_rank_zero_reports_and_peers_of_a_failure_stay_quiet(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert not reports(MinidmlError("every rank met this"))
    assert not reports(PeerFailure("rank 0 said it", quiet=True))
    assert reports(PeerFailure("a collective broke"))
    monkeypatch.setenv("RANK", "0")
    assert reports(MinidmlError("every rank met this"))
    with pytest.raises(MinidmlError, match="batch-size 6: 4 data-parallel"):
        Comm(0, 8).place([1, 1], torch.device("cpu"), (6,))


# ----------------------------------------------------------------------------- jobs
@pytest.mark.slow
def test_two_ranks_two_students_equal_one_process(reference, run2):
    out, done = run2
    assert_same_run(reference, out)
    meta = json.loads((out / "config.json").read_text())
    assert meta["world_size"] == 2
    assert done.stdout.count("trained 2 student(s) for 12 steps") == 1  # rank 0 reports
    omegas = [r for r in read_metrics(out / "metrics.jsonl") if r["event"] == "omega"]
    assert [r["step"] for r in omegas] == [3, 6, 9, 12]  # each outer step once, by rank 0


@pytest.mark.slow
def test_student_by_data_parallel_mesh_equals_one_process(reference, grammar_corpus, tmp_path):
    """World size 4, 2 students: each student on 2 replicas that take half of every batch."""
    train_cli(4, grammar_corpus, tmp_path / "run", tmp_path)
    assert_same_run(reference, tmp_path / "run")


@pytest.mark.slow
def test_an_uneven_placement_equals_one_process(grammar_corpus, tmp_path):
    """Three students on two ranks (one rank holds two of them)."""
    settings = {**SETTINGS, "students": (Shape(1, 32, 2), Shape(1, 48, 2), Shape(2, 32, 2)),
                "steps": 6, "save_every": 3, "eval_every": 3}
    ref = minidml.train(grammar_corpus, tmp_path / "ref", TrainConfig(**settings))
    train_cli(2, grammar_corpus, tmp_path / "run", tmp_path, settings)
    assert_same_run(ref.path, tmp_path / "run")


FAILING = textwrap.dedent("""
    import json, sys
    import torch
    import minidml
    from minidml import Callback, Shape, TrainConfig

    class Fail(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.step != 3:
                return
            if sys.argv[4] == "raise" and trainer.comm.rank == 1:
                raise RuntimeError("injected failure on rank 1")
            if sys.argv[4] == "nan" and 0 in trainer.comm.local:  # student 0's owner only
                with torch.no_grad():
                    trainer.students[0].embed.weight[0, 0] = float("nan")

    settings = json.loads(sys.argv[3])
    settings["students"] = tuple(Shape(**s) for s in settings["students"])
    minidml.train(sys.argv[1], sys.argv[2], TrainConfig(**settings), callbacks=[Fail()])
""")


def launch_failing(corpus: Path, tmp: Path, how: str) -> list[tuple[int, str]]:
    """Two ranks as plain processes given torchrun's environment (no agent to kill the
    survivors): each must end by itself within 60 s. Their (status, stderr)."""
    script = tmp / "failing.py"
    script.write_text(FAILING)
    settings = {**SETTINGS, "steps": 50, "save_every": 2,
                "students": [dict(n_layers=s.n_layers, d_model=s.d_model, n_heads=s.n_heads)
                             for s in SETTINGS["students"]]}
    port, t0 = free_port(), time.monotonic()
    procs = [subprocess.Popen(
        [sys.executable, str(script), str(corpus), str(tmp / how), json.dumps(settings), how],
        env={**env(), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": "2",
             "RANK": str(r), "LOCAL_RANK": str(r), "MINIDML_DIST_TIMEOUT": "120"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        outs = [p.communicate(timeout=60) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert time.monotonic() - t0 < 60
    return [(p.returncode, err) for p, (_, err) in zip(procs, outs, strict=True)]


@pytest.mark.slow
def test_a_rank_that_raises_stops_the_whole_job(grammar_corpus, tmp_path):
    (rc0, err0), (rc1, err1) = launch_failing(grammar_corpus, tmp_path, "raise")
    assert rc0 != 0 and rc1 != 0
    assert "injected failure on rank 1" in err1
    assert "PeerFailure: rank 0: stopped while" in err0  # it did not wait for a timeout


@pytest.mark.slow
def test_a_non_finite_step_on_one_rank_stops_every_rank_alike(grammar_corpus, tmp_path):
    """Only student 0's owner holds the NaN; the flags are summed, so both ranks stop at
    the same step with the same error (and neither waits for the other)."""
    results = launch_failing(grammar_corpus, tmp_path, "nan")
    for rc, err in results:
        assert rc != 0
        assert "MinidmlError: step 4: non-finite loss or gradient for student(s) 0" in err
    run = minidml.load(tmp_path / "nan")  # the checkpoint before the poison, finite
    assert run.step == 2
    assert all(torch.isfinite(p).all() for s in run.students for p in s.parameters())


@pytest.mark.slow
def test_errors_print_once_and_leave_nothing_behind(grammar_corpus, tmp_path):
    cfg = tmp_path / "settings.toml"
    cfg.write_text(toml(SETTINGS))
    done = torchrun(3, str(grammar_corpus), "--out", str(tmp_path / "run"), "--config",
                    str(cfg))
    assert done.returncode != 0
    both = done.stdout + done.stderr
    assert both.count("error: world size 3: with 2 students") == 1, both[-3000:]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_a_distributed_run_resumes_with_the_same_or_another_world_size(
        reference, run2, grammar_corpus, tmp_path):
    """A run killed after its step-6 checkpoint, continued on 2 ranks and on 1 process."""
    src, _ = run2
    for name in ("two", "one"):
        shutil.copytree(src, tmp_path / name)
        shutil.rmtree(checkpoints(tmp_path / name)[-1])  # as if killed before step 12
        assert checkpoints(tmp_path / name)[-1].name == "step-00000006"
    train_cli(2, grammar_corpus, tmp_path / "two", tmp_path, SETTINGS, "--resume")
    assert_same_run(reference, tmp_path / "two")
    minidml.train(grammar_corpus, tmp_path / "one", TrainConfig(**SETTINGS), resume=True)
    assert_same_run(reference, tmp_path / "one")
    for name in ("two", "one"):  # records after the checkpoint were dropped, not duplicated
        steps = [r["step"] for r in read_metrics(tmp_path / name / "metrics.jsonl")
                 if r["event"] == "train"]
        assert steps == [3, 6, 9, 12]


@pytest.mark.slow
def test_teacher_guided_distillation_is_distributed_too(tiny_run, grammar_corpus, tmp_path):
    """kd: the teachers are replicated on every rank; each rank distils its own students."""
    settings = {**SETTINGS, "mode": "kd", "teachers": (str(tiny_run.path),), "steps": 6,
                "save_every": 3, "eval_every": 3}
    ref = minidml.train(grammar_corpus, tmp_path / "ref", TrainConfig(**settings))
    train_cli(2, grammar_corpus, tmp_path / "run", tmp_path, settings)
    assert_same_run(ref.path, tmp_path / "run")
    assert json.loads((tmp_path / "run/config.json").read_text())["teachers"][0]["run"] == \
        str(tiny_run.path)


@pytest.mark.slow
def test_bf16_peer_tensors_stay_close_to_one_process(reference, grammar_corpus, tmp_path):
    train_cli(2, grammar_corpus, tmp_path / "run", tmp_path, SETTINGS, "--peer-dtype", "bf16")
    a, b = minidml.load(reference), minidml.load(tmp_path / "run")
    diffs = [(x - y).abs().max().item() for sa, sb in zip(a.students, b.students, strict=True)
             for x, y in zip(sa.state_dict().values(), sb.state_dict().values(), strict=True)]
    assert 0 < max(diffs) < 1e-2  # rounded peers: not the same numbers, nearly the same run
    torch.testing.assert_close(a.omega, b.omega, rtol=0, atol=1e-2)
