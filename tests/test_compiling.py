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


class StopAt(Callback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, trainer, losses):
        trainer.should_stop = trainer.step == self.step


def test_auto_compiles_runs_long_enough_to_repay_it():
    """Judged at a nominal rate or by the time budget, never by a timing: the same run
    decides alike however busy the machine is."""
    rate = runtime.NOMINAL_EAGER_FLOPS["cpu"]
    on, line = runtime.decide_compile("auto", CPU, rate * 60)  # a one-minute run
    assert not on and line.startswith("compile: off (auto: ~1 min eager at a nominal 45 GFLOP/s")
    on, line = runtime.decide_compile("auto", CPU, rate * 20 * 60)
    assert on and line == "compile: on (auto: ~20 min eager at a nominal 45 GFLOP/s)"
    assert runtime.decide_compile("off", CPU, rate * 1200) == (False, "compile: off")
    assert runtime.decide_compile("auto", CPU, 1.0, max_time=3600) == (
        True, "compile: on (auto: a 60 min budget)")
    assert not runtime.decide_compile("auto", CPU, 1e18, max_time=120)[0]


def test_compile_on_where_inductor_cannot_work_is_refused(monkeypatch):
    monkeypatch.setattr(runtime, "inductor_available", lambda device: (False, "no g++"))
    with pytest.raises(MinidmlError, match=r"--compile on: torch.compile cannot work on cpu "
                                           r"\(no g\+\+\); use --compile off or auto"):
        runtime.decide_compile("on", CPU, 1.0)
    assert runtime.decide_compile("auto", CPU, 1e18) == (False, "compile: off (auto: no g++)")
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
