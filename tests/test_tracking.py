"""Experiment tracking: what TensorBoard, W&B and MLflow hold equals ``metrics.jsonl``,
across a kill and a resume, read back with each library's own reader."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from minidml.demo.grammar import write_corpus
from minidml.errors import MinidmlError
from minidml.tracking import Tracker, hyperparameters, scalars, sync

from _helpers import assert_one_line_error

ALL = "tensorboard,wandb,mlflow"
# steps: log every 2, evaluate every 5, ω every 3, checkpoint every 6, 14 in all
TRAIN = ["--mode", "wml", "--students", "2", "--layers", "1", "--width", "32,48", "--heads",
         "2", "--context", "32", "--batch-size", "8", "--vocab-size", "320", "--steps", "14",
         "--eval-every", "5", "--outer-every", "3", "--save-every", "6", "--log-every", "2",
         "--warmup", "2", "--quiet"]
KILL_AT = 10  # after its evaluation: steps 7-9 were sent, past the checkpoint at step 6
# a process's own timings, which a resumed process measures afresh
TIMINGS = {"tokens_per_s", "train_seconds", "seconds_per_step", "time"}

STOPPER = """
import os, sys
import minidml
from minidml.cli.commands import main

class Kill(minidml.Callback):
    def on_eval(self, trainer, record):
        if trainer.step == {at}:
            {how}

import minidml.launch as launch
original = launch.train
def train(*args, callbacks=(), **kwargs):
    return original(*args, callbacks=[*callbacks, Kill()], **kwargs)
launch.train = train
sys.exit(main(sys.argv[1:]))
"""
KILL = STOPPER.format(at=KILL_AT, how="os._exit(9)  # no clean-up: like kill -9")
INTERRUPT = STOPPER.format(at=KILL_AT, how="raise KeyboardInterrupt  # like Ctrl-C")


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Nothing reaches the network: W&B offline and without a key, MLflow's default store."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    monkeypatch.setenv("WANDB_CACHE_DIR", str(tmp_path / "wandb-cache"))
    # each training process starts its own W&B service (not this process's, which
    # sync may have started: a run killed there would stay "in use")
    monkeypatch.delenv("WANDB_SERVICE", raising=False)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minidml", *args], capture_output=True,
                          text=True, timeout=600)


def _expected(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per step, every number of every metrics.jsonl record, named as the docs say."""
    out: dict[int, dict[str, float]] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        row = out.setdefault(rec["step"], {})
        for key, value in rec.items():
            if key in ("event", "step") or isinstance(value, str | bool):
                continue
            if isinstance(value, list):
                row.update({f"{rec['event']}/{key}/{i}": v for i, v in enumerate(value)})
            else:
                row[f"{rec['event']}/{key}"] = value
    return out


def _check(got: dict[int, dict[str, float]], expected: dict[int, dict[str, float]],
           rel: float, what: str) -> None:
    assert sorted(got) == sorted(expected), what
    for step, row in expected.items():
        assert sorted(got[step]) == sorted(row), (what, step)
        for key, value in row.items():
            if key.split("/")[1] in TIMINGS and step < KILL_AT:
                continue  # measured by the process that was stopped
            assert got[step][key] == pytest.approx(value, rel=rel, abs=1e-12), (what, step, key)


def _tensorboard(run_dir: Path) -> tuple[dict[int, dict[str, float]], set[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    got: dict[int, dict[str, float]] = {}
    for tag in acc.Tags()["scalars"]:
        events = acc.Scalars(tag)
        assert len({e.step for e in events}) == len(events), f"{tag}: a step repeats"
        for e in events:
            got.setdefault(e.step, {})[tag] = e.value
    return got, set(acc.Tags()["tensors"])


def _mlflow(run_dir: Path) -> tuple[dict[int, dict[str, float]], dict[str, str]]:
    from mlflow.tracking import MlflowClient

    state = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["identity"]
    client = MlflowClient(tracking_uri=state["tracking_uri"])
    run = client.get_run(state["run_id"])
    got: dict[int, dict[str, float]] = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        assert len({m.step for m in history}) == len(history), f"{key}: a step repeats"
        for m in history:
            got.setdefault(m.step, {})[key] = m.value
    return got, run.data.params


def _wandb_records(path: Path):
    """The records of a W&B ``.wandb`` file (a LevelDB-style log of protobuf Records)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", path
    pos, block, pieces = 7, 32768, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pieces += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            record = pb.Record()
            record.ParseFromString(pieces)
            pieces = b""
            yield record


def _segments(run_dir: Path) -> list[Path]:
    """The W&B offline runs of a run directory, oldest first."""
    return sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))


def _wandb(run_dir: Path, segments: list[Path] | None = None
           ) -> tuple[dict[int, dict[str, float]], list[dict], dict[str, float]]:
    """The offline runs' history rows (no step in two), configs and summary."""
    got: dict[int, dict[str, float]] = {}
    configs, summary = [], {}
    for segment in _segments(run_dir) if segments is None else segments:
        for rec in _wandb_records(segment):
            kind = rec.WhichOneof("record_type")
            if kind == "history":
                row = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                       for i in rec.history.item}
                step = row.pop("_step")
                assert step not in got, f"step {step} in two W&B rows"
                got[step] = {k: v for k, v in row.items() if not k.startswith("_")}
            elif kind == "run" and rec.run.config.update:
                config = {i.key: json.loads(i.value_json) for i in rec.run.config.update}
                config.pop("_wandb", None)  # W&B's own
                if config:
                    configs.append(config)
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                for i in rec.summary.update})
    return got, configs, summary


def _train(tmp_path: Path, trackers: str, stopper: str, code: int,
           sent: int | None = None) -> Path:
    """A run stopped at step KILL_AT by ``stopper``, then resumed to its end."""
    corpus = write_corpus(tmp_path / "grammar.txt", 3_000, seed=0)
    out = tmp_path / "run"
    args = ["train", str(corpus), "--out", str(out), *TRAIN, "--log-to", trackers]
    stopped = subprocess.run([sys.executable, "-c", stopper, *args], capture_output=True,
                             text=True, timeout=600)
    assert stopped.returncode == code, stopped.stderr[-2000:]
    state = json.loads((out / "tracking.json").read_text())
    first_ids = {name: s["identity"] for name, s in state.items()}
    # killed: up to step 9, past the checkpoint at 6; interrupted: 10, its own checkpoint
    if sent is None:
        sent = KILL_AT - 1 if code == 9 else KILL_AT
    assert {s["sent"] for s in state.values()} == {sent}
    done = _cli(*args, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.loads((out / "tracking.json").read_text())
    assert {name: s["identity"] for name, s in state.items()} == first_ids  # the same runs
    assert {s["sent"] for s in state.values()} == {14}
    return out


@pytest.mark.slow
def test_tensorboard_and_mlflow_equal_the_metrics_across_a_kill_9(tmp_path, offline,
                                                                  require_extra):
    require_extra("tensorboard", "tensorboard")
    require_extra("mlflow", "mlflow", "sqlalchemy")
    out = _train(tmp_path, "tensorboard,mlflow", KILL, 9)
    expected = _expected(out)
    assert {6, 9, 10, 14} <= set(expected) and "omega/hypergrad/1" in expected[9]
    tb, tensors = _tensorboard(out)
    _check(tb, expected, 1e-6, "tensorboard")  # TensorBoard keeps float32
    assert "config.json/text_summary" in tensors
    ml, params = _mlflow(out)
    _check(ml, expected, 1e-12, "mlflow")
    config = json.loads((out / "config.json").read_text())["config"]
    assert params == {k: str(v) for k, v in hyperparameters(config).items()}
    # compare's scores go to the same tracked runs, at the last step
    sync(out, {"blimp/student-0": 0.625})
    assert _tensorboard(out)[0][14]["scores/blimp/student-0"] == pytest.approx(0.625)
    assert _mlflow(out)[0][14]["scores/blimp/student-0"] == pytest.approx(0.625)


@pytest.mark.slow
def test_wandb_equals_the_metrics_across_an_interruption(tmp_path, offline, require_extra):
    require_extra("wandb", "wandb")
    out = _train(tmp_path, "wandb", INTERRUPT, 130)
    expected = _expected(out)
    wb, configs, _ = _wandb(out)
    _check(wb, expected, 1e-12, "wandb")
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2  # interrupted, resumed
    config = json.loads((out / "config.json").read_text())["config"]
    assert len(configs) == 1 and configs[0]["lr"] == config["lr"]
    sync(out, {"blimp/student-0": 0.625})
    assert _wandb(out)[2]["scores/blimp/student-0"] == pytest.approx(0.625)


@pytest.mark.slow
def test_wandb_misses_no_step_after_a_kill_9(tmp_path, offline, require_extra):
    """W&B keeps a step only once its run closes: after a kill -9 the resumed run sends every
    step again (the killed run's file kept only some), so none is missing."""
    require_extra("wandb", "wandb")
    out = _train(tmp_path, "wandb", KILL, 9, sent=-1)  # nothing is certain before a close
    expected = _expected(out)
    killed, resumed = _segments(out)
    _check(_wandb(out, [resumed])[0], expected, 1e-12, "wandb, resumed")
    kept = _wandb(out, [killed])[0]
    assert set(kept) < set(expected)  # what the killed run's file kept, ...
    for step, row in kept.items():  # ... with the same values
        assert row == pytest.approx({k: expected[step][k] for k in row}, rel=1e-12)


def test_a_record_becomes_one_series_per_number():
    record = {"event": "train", "step": 4, "loss": [2.5, 3.0], "lr": 1e-3, "tokens": 256,
              "time": "2026-01-01T00:00:00+00:00", "flag": True, "students": []}
    assert scalars(record) == {"train/loss/0": 2.5, "train/loss/1": 3.0, "train/lr": 1e-3,
                               "train/tokens": 256.0}
    assert hyperparameters({"lr": 1e-3, "students": [{"n_layers": 2}], "steps": None}) == {
        "lr": 1e-3, "steps": "null", "students": '[{"n_layers": 2}]'}


class _Recording(Tracker):
    name = "recording"

    def __init__(self):
        super().__init__()
        self.sent: list[tuple[int, dict]] = []

    def open(self, run_dir, identity, meta):
        return {"id": "x"}

    def send(self, step, values):
        self.sent.append((step, dict(values)))

    def close(self):
        pass


def _trainer(run_dir: Path, is_main: bool) -> SimpleNamespace:
    return SimpleNamespace(comm=SimpleNamespace(is_main=is_main), run_dir=run_dir)


def test_a_step_is_sent_once_whole_and_never_again(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": {"lr": 1.0}}))
    t = _Recording()
    t.on_train_start(_trainer(tmp_path, True))
    for rec in ({"event": "omega", "step": 3, "omega": [0.5, 0.5]},
                {"event": "train", "step": 3, "loss": [1.0, 2.0]},
                {"event": "eval", "step": 3, "val_loss": [1.5, 2.5]},
                {"event": "train", "step": 4, "loss": [0.5, 1.5]}):
        t.record(rec)
    assert t.sent == [(3, {"omega/omega/0": 0.5, "omega/omega/1": 0.5, "train/loss/0": 1.0,
                           "train/loss/1": 2.0, "eval/val_loss/0": 1.5,
                           "eval/val_loss/1": 2.5})]
    t.on_checkpoint(None, tmp_path)  # a checkpoint sends the step in hand
    assert t.sent[-1] == (4, {"train/loss/0": 0.5, "train/loss/1": 1.5})
    again = _Recording()  # a resumed process: steps up to 4 are in the tracked run
    again.on_train_start(_trainer(tmp_path, True))
    for step in (3, 4, 5):
        again.record({"event": "train", "step": step, "loss": [float(step)]})
    again.on_train_end(None)
    assert again.sent == [(5, {"train/loss/0": 5.0})]


def test_a_new_tracked_run_gets_every_step_again(tmp_path):
    """A tracker that has to start a new tracked run on resuming (another store, or the old
    run deleted from it) is sent every step of metrics.jsonl, not only those after the last
    one the old run received."""
    (tmp_path / "config.json").write_text(json.dumps({"config": {"lr": 1.0}}))
    steps = [{"event": "train", "step": s, "loss": [float(s)]} for s in (3, 4)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
    first = _Recording()
    first.on_train_start(_trainer(tmp_path, True))
    first.on_train_end(None)
    assert [s for s, _ in first.sent] == [3, 4]
    again = _Recording()  # the same tracked run: nothing to send again
    again.on_train_start(_trainer(tmp_path, True))
    again.on_train_end(None)
    assert again.sent == []

    class Elsewhere(_Recording):
        def open(self, run_dir, identity, meta):
            return {"id": "y"}

    other = Elsewhere()
    other.on_train_start(_trainer(tmp_path, True))
    other.on_train_end(None)
    assert [s for s, _ in other.sent] == [3, 4]


def test_a_deleted_mlflow_experiment_is_one_line(tmp_path, offline, monkeypatch,
                                                 require_extra):
    """An experiment deleted in the UI (not yet purged) cannot take runs: one line naming it
    and the ways out, before training."""
    require_extra("mlflow", "mlflow", "sqlalchemy")
    from mlflow.tracking import MlflowClient

    from minidml.tracking.mlflow import MLflowTracker, tracking_uri

    (tmp_path / "config.json").write_text(json.dumps({"config": {"lr": 1.0}}))
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "gone")
    client = MlflowClient(tracking_uri=tracking_uri(tmp_path))
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(MinidmlError, match=r"--log-to mlflow: the experiment 'gone' was "
                                           r"deleted .*MLFLOW_EXPERIMENT_NAME"):
        MLflowTracker().on_train_start(_trainer(tmp_path, True))


class _Flaky(_Recording):
    """A tracker whose library fails from one step on (a server that stops answering)."""

    def __init__(self, fail_from: float):
        super().__init__()
        self.fail_from, self.closed = fail_from, False

    def send(self, step, values):
        if step >= self.fail_from:
            raise ConnectionError("server did not answer\nretry later")
        super().send(step, values)

    def close(self):
        self.closed = True


def test_a_tracker_failing_mid_run_warns_once_and_training_goes_on(grammar_corpus,
                                                                   tmp_path):
    import minidml
    from minidml import Shape, TrainConfig

    cfg = TrainConfig(students=(Shape(1, 32, 2),), context=32, batch_size=8, vocab_size=400,
                      warmup_steps=2, eval_every=4, eval_tokens=1024, log_every=2,
                      save_every=4, steps=12)
    flaky = _Flaky(fail_from=6)
    with pytest.warns(RuntimeWarning) as caught:
        run = minidml.train(grammar_corpus, tmp_path / "run", cfg, callbacks=[flaky])
    assert run.step == 12  # the run went on to its end
    (warning,) = [w for w in caught if "--log-to recording" in str(w.message)]
    text = str(warning.message)
    assert "\n" not in text and "sending step 6 failed" in text
    assert "ConnectionError: server did not answer" in text and "sync" in text
    assert [s for s, _ in flaky.sent] == [2, 4] and flaky.closed
    state = json.loads((tmp_path / "run" / "tracking.json").read_text())
    assert state["recording"] == {"identity": {"id": "x"}, "sent": 4}
    # the server is back: the tracked run gets every step it lacks, once, then the scores
    from minidml import tracking

    back = _Recording()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tracking, "NAMES", (*tracking.NAMES, "recording"))
        mp.setattr(tracking, "make_trackers", lambda names: [back])
        sync(tmp_path / "run", {"blimp/student-0": 0.5})
    steps = [s for s, _ in back.sent]
    assert steps == [6, 8, 10, 12, 12] and back.sent[-1][1] == {"scores/blimp/student-0": 0.5}
    metrics = [r for r in (json.loads(x) for x in
                           (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
               if r["step"] == 8]
    assert back.sent[1][1] == {k: v for r in metrics for k, v in scalars(r).items()}
    assert json.loads((tmp_path / "run" / "tracking.json").read_text())["recording"][
        "sent"] == 12


def test_a_tracker_that_cannot_open_at_sync_warns_and_keeps_its_record(tmp_path,
                                                                       monkeypatch):
    from minidml import tracking

    (tmp_path / "config.json").write_text(json.dumps({"config": {}}))
    state = {"recording": {"identity": {"id": "x"}, "sent": 4}}
    (tmp_path / "tracking.json").write_text(json.dumps(state))

    class Unreachable(_Recording):
        def open(self, run_dir, identity, meta):
            raise OSError("connection refused")

    monkeypatch.setattr(tracking, "NAMES", (*tracking.NAMES, "recording"))
    monkeypatch.setattr(tracking, "make_trackers", lambda names: [Unreachable()])
    with pytest.warns(RuntimeWarning, match=r"opening its run failed \(OSError: connection"):
        sync(tmp_path, {"blimp/student-0": 0.5})
    assert json.loads((tmp_path / "tracking.json").read_text()) == state


def test_only_rank_0_tracks(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"config": {}}))
    t = _Recording()
    t.on_train_start(_trainer(tmp_path, False))
    t.record({"event": "train", "step": 1, "loss": [1.0]})
    t.on_train_end(None)
    assert t.sent == [] and not (tmp_path / "tracking.json").exists()


@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_a_missing_tracking_extra_is_one_line_and_writes_nothing(name, tmp_path, monkeypatch,
                                                                  capsys):
    import importlib.util

    from minidml.cli.commands import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda lib, *a: None if lib == name else real(lib, *a))
    corpus = write_corpus(tmp_path / "grammar.txt", 200, seed=0)
    with pytest.raises(SystemExit) as exc:
        main(["train", str(corpus), "--out", str(tmp_path / "run"), *TRAIN,
              "--log-to", f"tensorboard,{name}" if name != "tensorboard" else name])
    assert_one_line_error(exc.value.code, capsys.readouterr().err, f"--log-to {name}",
                          f"minidml[{name}]")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["tensorbord", "wandb,wandb", ","])
def test_a_bad_tracker_name_is_one_line(value, tmp_path, capsys):
    from minidml.cli.commands import main

    with pytest.raises(SystemExit) as exc:
        main(["train", str(tmp_path / "missing.txt"), "--log-to", value])
    assert_one_line_error(exc.value.code, capsys.readouterr().err, "--log-to")
