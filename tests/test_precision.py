"""--precision auto: bf16 only where it measures faster; the choice is recorded and kept."""

from __future__ import annotations

import json

import pytest
import torch

import minidml
from minidml import Shape, TrainConfig, runtime
from minidml.errors import MinidmlError
from minidml.trainer import Callback

CPU = torch.device("cpu")
TINY = dict(students=(Shape(1, 32, 2),), mode="single", context=16, batch_size=4,
            vocab_size=300, warmup_steps=1, eval_every=4, eval_tokens=256, save_every=2)


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, losses):
        trainer.should_stop = trainer.step == self.step


def fake_ratio(monkeypatch, ratio: float) -> None:
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: True)  # timed, then
    monkeypatch.setattr(runtime, "measure_precision", lambda device, widths, vocab, bf16=True: {
        "device": str(device), "shapes": {}, "bf16_over_fp32_time": ratio})


def test_auto_follows_the_measurement_on_this_device(monkeypatch):
    choice, record, warning = runtime.choose_precision("auto", CPU, [64, 32], 500)
    units = runtime.cpu_bf16_units()
    if units is False:  # capabilities first: float32, and bf16 is not even timed
        assert choice == record["choice"] == "fp32" and "no bf16 matrix units" in record["reason"]
        assert "bf16_over_fp32_time" not in record
        monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: True)  # time it, then
        choice, record, warning = runtime.choose_precision("auto", CPU, [64, 32], 500)
    ratio = record["bf16_over_fp32_time"]
    assert choice == ("bf16" if ratio * runtime.BF16_MARGIN <= 1 else "fp32") == record["choice"]
    assert warning is None and set(record["shapes"]) == {"projection", "head"}
    head = record["shapes"]["head"]
    assert head["mnk"] == [128, 64, 500] and head["fp32_seconds"] > 0 and head["bf16_seconds"] > 0


def test_auto_does_not_flip_under_load(monkeypatch):
    """Timings that wander as a busy machine makes them (bf16 at 0.75x to 1.3x fp32's time)
    never make auto take bf16; capabilities decide without any timing at all."""
    import random

    rng = random.Random(0)
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: True)
    monkeypatch.setattr(runtime, "measure_precision", lambda device, widths, vocab, bf16=True: {
        "device": str(device), "shapes": {}, "bf16_over_fp32_time": rng.uniform(0.75, 1.3)})
    assert {runtime.choose_precision("auto", CPU, [32], 100)[0] for _ in range(50)} == {"fp32"}
    monkeypatch.setattr(runtime, "cpu_bf16_units", lambda: False)
    assert {runtime.choose_precision("auto", CPU, [32], 100)[0] for _ in range(50)} == {"fp32"}


@pytest.mark.parametrize("ratio, auto", [(80.0, "fp32"), (0.5, "bf16"), (0.95, "fp32")])
def test_auto_picks_bf16_only_when_clearly_faster(monkeypatch, ratio, auto):
    fake_ratio(monkeypatch, ratio)
    assert runtime.choose_precision("auto", CPU, [32], 100)[0] == auto
    choice, record, warning = runtime.choose_precision("bf16", CPU, [32], 100)
    assert choice == "bf16" and record["requested"] == "bf16"
    if ratio > 1:
        assert warning == (f"warning: --precision bf16 is {ratio:.1f}x slower than fp32 at "
                           "this run's matmul shapes on cpu (no bf16 matrix units?); "
                           "--precision auto would use fp32")
    else:
        assert warning is None


def test_fp32_times_no_bf16_and_unsupported_bf16_is_refused(monkeypatch):
    choice, record, _ = runtime.choose_precision("fp32", CPU, [32], 100)
    assert choice == record["choice"] == "fp32" and "bf16_over_fp32_time" not in record
    assert record["shapes"]["head"]["fp32_seconds"] > 0  # the rate that sizes a run
    assert "bf16_seconds" not in record["shapes"]["head"]
    monkeypatch.setattr(runtime, "bf16_supported", lambda device: False)
    with pytest.raises(MinidmlError, match=r"--precision bf16: cpu has no bfloat16 support"):
        runtime.choose_precision("bf16", CPU, [32], 100)
    choice, record, _ = runtime.choose_precision("auto", CPU, [32], 100)
    assert choice == "fp32" and "no bfloat16 support" in record["reason"]


def test_the_choice_is_recorded_and_kept_on_resume(grammar_corpus, tmp_path, monkeypatch,
                                                   capsys):
    fake_ratio(monkeypatch, 0.5)  # as if bf16 were faster here
    cfg = TrainConfig(**TINY, steps=4)
    run = minidml.train(grammar_corpus, tmp_path / "run", cfg, callbacks=[StopAt(2)])
    assert run.step == 2
    meta = json.loads((run.path / "config.json").read_text())
    assert meta["config"]["precision"] == "auto"
    assert meta["precision"] == {"requested": "auto", "choice": "bf16", "device": "cpu",
                                 "shapes": {}, "bf16_over_fp32_time": 0.5,
                                 "reason": "bf16 took 0.50x fp32's time (bf16 needs 0.67x or "
                                           "less)"}
    fake_ratio(monkeypatch, 80.0)  # a resumed run does not measure again
    monkeypatch.setattr(runtime, "measure_precision", lambda *a: pytest.fail("measured on resume"))
    resumed = minidml.train(grammar_corpus, tmp_path / "run", cfg, resume=True)
    assert resumed.step == 4
    assert json.loads((run.path / "config.json").read_text())["precision"]["choice"] == "bf16"


def test_an_explicit_bf16_that_is_slower_says_so_once(grammar_corpus, tmp_path, monkeypatch,
                                                     capsys):
    fake_ratio(monkeypatch, 42.0)
    minidml.train(grammar_corpus, tmp_path / "run", TrainConfig(**TINY, steps=1,
                                                                 precision="bf16"))
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "slower" in ln]
    assert lines == ["warning: --precision bf16 is 42.0x slower than fp32 at this run's "
                     "matmul shapes on cpu (no bf16 matrix units?); --precision auto would "
                     "use fp32"]


# ----------------------------------------------------------------------------- device
@pytest.mark.parametrize("name", ["meta", "xla", "cpu:1", "cuda:", "cudax", "cuda:-1", "mps:0",
                                  "CPU", "\r", "cpu\n"])
def test_a_device_that_is_none_of_the_choices_is_refused(name):
    with pytest.raises(MinidmlError) as err:
        runtime.resolve_device(name)
    shown = name if name.isprintable() else repr(name)  # a control character, made visible
    assert str(err.value) == f"--device {shown}: not a device; use auto, cpu, cuda, cuda:N or mps"


def test_cuda_n_must_be_a_device_of_this_machine(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert runtime.resolve_device("cpu") == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.resolve_device("cuda") == torch.device("cuda")
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MinidmlError) as err:
        runtime.resolve_device("cuda:2")
    assert str(err.value) == ("--device cuda:2: this machine has 2 CUDA devices, cuda:0 to "
                              "cuda:1; choose one of them, or cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(MinidmlError, match=r"^--device cuda:1: this machine has one CUDA "
                                           r"device, cuda:0;"):
        runtime.resolve_device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(MinidmlError, match=r"^--device cuda:0: CUDA is not available here"):
        runtime.resolve_device("cuda:0")
