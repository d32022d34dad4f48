"""--compile: where inductor works and a run is long enough; compiled runs resume exactly."""

from __future__ import annotations

import json

import pytest
import torch

import minidml
from minidml import Shape, TrainConfig, runtime
from minidml.errors import MinidmlError
from minidml.trainer import Callback

CPU = torch.device("cpu")
MEASURED = {"shapes": {"head": {"mnk": [128, 64, 1000], "fp32_seconds": 1e-3}}}  # 16 GFLOP/s


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, losses):
        trainer.should_stop = trainer.step == self.step


def test_auto_compiles_runs_long_enough_to_repay_it():
    rate = 2 * 128 * 64 * 1000 / 1e-3
    short = 0.5 * rate * 60  # a one-minute run at half the measured rate
    assert runtime.estimated_seconds(short, MEASURED) == pytest.approx(60)
    on, line = runtime.decide_compile("auto", CPU, short, MEASURED)
    assert not on and line.startswith("compile: off (auto: the run should take ~1 min")
    on, line = runtime.decide_compile("auto", CPU, 20 * short, MEASURED)
    assert on and line == "compile: on (auto: the run should take ~20 min eager)"
    assert runtime.decide_compile("off", CPU, 20 * short, MEASURED) == (False, "compile: off")
    assert not runtime.decide_compile("auto", CPU, 20 * short, {})[0]  # nothing measured


def test_compile_on_where_inductor_cannot_work_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "inductor_available", lambda device: (False, "no g++"))
    with pytest.raises(MinidmlError, match=r"--compile on: torch.compile cannot work on cpu "
                                           r"\(no g\+\+\); use --compile off or auto"):
        runtime.decide_compile("on", CPU, 1.0, MEASURED)
    assert runtime.decide_compile("auto", CPU, 1e18, MEASURED) == (False,
                                                             "compile: off (auto: no g++)")
    assert not runtime.inductor_available(torch.device("mps"))[0]


@pytest.mark.slow
def test_a_compiled_run_resumes_bit_identically_with_plain_checkpoints(grammar_corpus,
                                                                       tmp_path):
    if not runtime.inductor_available(CPU)[0]:
        pytest.skip("no C++ compiler for inductor")
    cfg = TrainConfig(students=(Shape(1, 32, 2),), mode="single", context=16, batch_size=4,
                      vocab_size=300, warmup_steps=1, eval_every=3, eval_tokens=256,
                      save_every=2, steps=4, compile="on", precision="fp32")
    whole = minidml.train(grammar_corpus, tmp_path / "whole", cfg)
    assert json.loads((whole.path / "config.json").read_text())["compile"]["choice"] is True
    minidml.train(grammar_corpus, tmp_path / "cut", cfg, callbacks=[StopAt(2)])
    resumed = minidml.train(grammar_corpus, tmp_path / "cut", cfg, resume=True)
    a, b = whole.students[0].state_dict(), resumed.students[0].state_dict()
    assert list(a) == list(b) and not any("_orig_mod" in k for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    eager = minidml.train(grammar_corpus, tmp_path / "eager", cfg.replace(compile="off"))
    for k, v in eager.students[0].state_dict().items():  # the same training, to rounding
        torch.testing.assert_close(a[k], v, rtol=1e-4, atol=1e-5)
