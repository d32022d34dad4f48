"""Training settings: JSON round trips, strict checking of keys, types and values, TOML files."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidml.config import TrainConfig
from minidml.errors import MinidmlError
from minidml.model import Shape

# ----------------------------------------------------------------------------- round trips
SHAPES = st.builds(lambda layers, heads, half, ratio: Shape(layers, 2 * half * heads, heads, ratio),
                   st.integers(1, 12), st.integers(1, 8), st.integers(1, 16),
                   st.floats(0.5, 8.0))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=False,
                                                                       allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=3),
    max_leaves=8)


@st.composite
def configs(draw) -> TrainConfig:
    length = draw(st.sampled_from(["epoch", "steps", "tokens"]))
    kw = dict(
        students=tuple(draw(st.lists(SHAPES, min_size=1, max_size=5))),
        mode=draw(st.sampled_from(["single", "dml"])),
        alpha=draw(st.floats(0.0, 1.0)),
        temperature=draw(st.floats(0.05, 20.0)),
        vocab_size=draw(st.none() | st.integers(300, 100_000)),
        tokenizer_type=draw(st.sampled_from(["unigram", "bpe"])),
        context=draw(st.integers(1, 4096)),
        batch_size=draw(st.integers(1, 512)),
        grad_accum=draw(st.integers(1, 16)),
        val_fraction=draw(st.floats(0.001, 0.49)),
        encoding_errors=draw(st.sampled_from(["strict", "replace", "ignore"])),
        lr=draw(st.floats(1e-6, 1.0)),
        min_lr_ratio=draw(st.floats(0.0, 1.0)),
        warmup_steps=draw(st.integers(0, 1000)),
        weight_decay=draw(st.floats(0.0, 1.0)),
        beta1=draw(st.floats(0.0, 1.0, exclude_max=True)),
        beta2=draw(st.floats(0.0, 1.0, exclude_max=True)),
        grad_clip=draw(st.floats(0.0, 10.0)),
        seed=draw(st.integers(0, 2**31)),
        device=draw(st.sampled_from(["auto", "cpu", "cuda", "cuda:1", "mps"])),
        precision=draw(st.sampled_from(["fp32", "bf16"])),
        log_every=draw(st.integers(1, 100)),
        eval_every=draw(st.integers(1, 1000)),
        eval_tokens=draw(st.integers(1, 10**6)),
        save_every=draw(st.integers(1, 1000)),
        extra=draw(st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=3)),
    )
    if length != "epoch":
        kw[length] = draw(st.integers(1, 10**9))
    return TrainConfig(**kw)


@settings(max_examples=60, deadline=None)
@given(cfg=configs())
def test_json_round_trip(cfg):
    text = json.dumps(cfg.to_dict())
    back = TrainConfig.from_dict(json.loads(text))
    assert back == cfg
    assert json.dumps(back.to_dict()) == text
    assert all(isinstance(s, Shape) for s in back.students)


def test_default_config_round_trips_and_to_dict_has_every_field():
    cfg = TrainConfig()
    d = cfg.to_dict()
    assert set(d) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert TrainConfig.from_dict(json.loads(json.dumps(d))) == cfg
    assert cfg.n_students == len(cfg.students) == 4
    assert cfg.tokens_per_step == cfg.batch_size * cfg.context * cfg.grad_accum


def test_ints_are_accepted_for_floats():
    cfg = TrainConfig.from_dict({"lr": 1, "temperature": 2, "students": [
        {"n_layers": 2, "d_model": 64, "n_heads": 2, "mlp_ratio": 3}]})
    assert cfg.lr == 1.0 and type(cfg.lr) is float
    assert cfg.temperature == 2.0 and type(cfg.temperature) is float
    assert cfg.students == (Shape(2, 64, 2, 3.0),) and type(cfg.students[0].mlp_ratio) is float


def test_optional_keys_take_null():
    cfg = TrainConfig.from_dict({"steps": None, "vocab_size": None, "tokens": 5000})
    assert cfg.steps is None and cfg.vocab_size is None and cfg.tokens == 5000


# ----------------------------------------------------------------------------- refusals
def names_key(message: str, key: str) -> bool:
    return key in message or key.replace("_", "-") in message


def test_unknown_key_is_refused():
    with pytest.raises(MinidmlError, match="unknown key 'learning_rate'"):
        TrainConfig.from_dict({"lr": 0.1, "learning_rate": 0.1})
    with pytest.raises(MinidmlError, match="expected a table"):
        TrainConfig.from_dict([("lr", 0.1)])  # type: ignore[arg-type]


@pytest.mark.parametrize("key, value", [
    ("batch_size", True), ("batch_size", 32.0), ("batch_size", "32"), ("batch_size", None),
    ("context", False), ("seed", 1.5), ("steps", "100"), ("vocab_size", 1.5),
    ("lr", "0.1"), ("lr", True), ("lr", None), ("alpha", [0.5]), ("temperature", {}),
    ("mode", 1), ("device", None), ("precision", ["fp32"]),
    ("students", "4x"), ("students", [1, 2]), ("students", {"n_layers": 1}),
    ("extra", []), ("extra", "x"),
])
def test_wrong_types_are_refused_naming_the_key(key, value):
    with pytest.raises(MinidmlError) as err:
        TrainConfig.from_dict({key: value})
    assert names_key(str(err.value), key), str(err.value)


@pytest.mark.parametrize("student", [
    {"n_layers": 2, "d_model": 64},  # missing n_heads
    {"n_layers": 2, "d_model": 64, "n_heads": 2, "width": 3},  # unknown
    {"n_layers": True, "d_model": 64, "n_heads": 2},
    {"n_layers": 2.0, "d_model": 64, "n_heads": 2},
    {"n_layers": 2, "d_model": "64", "n_heads": 2},
    {"n_layers": 2, "d_model": 64, "n_heads": 2, "mlp_ratio": "4"},
    {"n_layers": 2, "d_model": 64, "n_heads": 2, "mlp_ratio": None},
])
def test_bad_student_tables_are_refused(student):
    with pytest.raises(MinidmlError, match="students"):
        TrainConfig.from_dict({"students": [{"n_layers": 1, "d_model": 32, "n_heads": 2},
                                            student]})


@pytest.mark.parametrize("key, value", [
    ("context", 0), ("batch_size", 0), ("grad_accum", -1), ("log_every", 0),
    ("eval_every", 0), ("eval_tokens", 0), ("save_every", 0), ("warmup_steps", -1),
    ("steps", 0), ("tokens", -5), ("vocab_size", 0),
    ("lr", 0.0), ("lr", -1e-3), ("lr", math.inf), ("lr", math.nan),
    ("temperature", 0.0), ("temperature", math.inf),
    ("alpha", -0.1), ("alpha", 1.5), ("alpha", math.nan),
    ("min_lr_ratio", 1.1), ("beta1", -0.5), ("beta2", 2.0), ("beta2", math.nan),
    ("weight_decay", -0.1), ("weight_decay", math.inf), ("grad_clip", math.nan),
    ("val_fraction", 0.0), ("val_fraction", 0.5), ("val_fraction", math.nan),
    ("mode", "wml-typo"), ("precision", "fp16"), ("tokenizer_type", "wordpiece"),
    ("tokenizer_boundary", "suffix"),
    ("encoding_errors", "surrogateescape"), ("device", "gpu"), ("students", []),
    ("beta1", 1.0), ("beta2", 1.0), ("checkpoint_words", [-5, 0]),
    ("checkpoint_words", [1_000_000, 0]), ("device", "meta"), ("device", "xla"),
    ("device", "cpu:1"), ("device", "cudax"), ("device", "cuda:"), ("device", "mps:0"),
])
def test_impossible_values_are_refused_naming_the_key(key, value):
    with pytest.raises(MinidmlError) as err:
        TrainConfig.from_dict({key: value})
    assert names_key(str(err.value), key), str(err.value)
    with pytest.raises(MinidmlError):
        TrainConfig().replace(**{key: value})  # the same checks for Python callers


@pytest.mark.parametrize("key, value", [
    ("warmup_steps", 0), ("alpha", 0.0), ("alpha", 1.0), ("weight_decay", 0.0),
    ("grad_clip", 0.0), ("min_lr_ratio", 0.0), ("val_fraction", 0.49), ("device", "cuda:3"),
    ("device", "cpu"), ("device", "mps"), ("vocab_size", 300), ("steps", 1),
    ("beta1", 0.0), ("beta2", 0.999), ("device", "cuda"), ("device", "cuda:0"),
])
def test_boundary_values_are_accepted(key, value):
    assert getattr(TrainConfig.from_dict({key: value}), key) == value


def test_steps_and_tokens_are_exclusive():
    with pytest.raises(MinidmlError, match="--steps and --tokens"):
        TrainConfig.from_dict({"steps": 10, "tokens": 1000})


@pytest.mark.parametrize("seed", [-1, 2**32])
def test_seed_out_of_range_is_refused(seed):
    with pytest.raises(MinidmlError, match="seed"):
        TrainConfig.from_dict({"seed": seed})


def test_int_too_large_for_a_float_is_refused():
    data = json.loads('{"lr": 1' + "0" * 400 + "}")
    with pytest.raises(MinidmlError, match="lr"):
        TrainConfig.from_dict(data)


# ----------------------------------------------------------------------------- TOML
TOML = """\
# a run of two students
mode = "dml"
alpha = 0.25
temperature = 2
steps = 100
lr = 1e-3
vocab_size = 4096

[extra]
note = "hi"

[[students]]
n_layers = 2
d_model = 64
n_heads = 2

[[students]]
n_layers = 1
d_model = 96
n_heads = 4
mlp_ratio = 3
"""


def test_toml_settings(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(TOML, encoding="utf-8")
    got = TrainConfig.toml_settings(path)
    assert got == {"mode": "dml", "alpha": 0.25, "temperature": 2.0, "steps": 100,
                   "lr": 1e-3, "vocab_size": 4096, "extra": {"note": "hi"},
                   "students": (Shape(2, 64, 2), Shape(1, 96, 4, 3.0))}
    cfg = TrainConfig(context=64).replace(**got)
    assert cfg.students == (Shape(2, 64, 2), Shape(1, 96, 4, 3.0)) and cfg.n_students == 2
    assert cfg.context == 64 and cfg.alpha == 0.25 and cfg.steps == 100  # file over defaults
    assert TrainConfig.toml_settings(str(path)) == got


@pytest.mark.parametrize("content, match", [
    (b"alpha = = 0.5\n", "not valid TOML"),
    (b"mode = \"dml\"\n\xff\xfe\n", "not valid TOML"),
    (b"[optimiser]\nlr = 0.1\n", "unknown key 'optimiser'"),
    (b"batch_size = \"32\"\n", "batch_size"),
    (b"seed = 1979-05-27\n", "seed"),
    (b"[[students]]\nn_layers = 2\nd_model = 64\n", "students"),
])
def test_bad_toml_is_refused(tmp_path, content, match):
    path = tmp_path / "bad.toml"
    path.write_bytes(content)
    with pytest.raises(MinidmlError, match=match) as err:
        TrainConfig.toml_settings(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("content, needle", [
    ("beta1 = 1.0\n", "beta1 1.0: must be at least 0 and below 1"),
    ("beta2 = 1\n", "beta2 1.0: must be at least 0 and below 1"),
    ("checkpoint_words = [-5, 0]\n", "--checkpoint-words -5: must be a positive integer"),
    ("checkpoint_words = [1_000_000, 0]\n", "--checkpoint-words 0: must be a positive integer"),
    ("alpha = 2.0\n", "--alpha 2.0: must be between 0 and 1"),
])
def test_toml_values_out_of_range_are_refused_naming_the_file(tmp_path, content, needle):
    path = tmp_path / "run.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MinidmlError) as err:
        TrainConfig.toml_settings(path)
    assert str(err.value) == f"{path}: {needle}"


def test_checkpoint_words_of_at_least_one_are_accepted():
    assert TrainConfig(checkpoint_words=(1, 2_000_000)).checkpoint_words == (1, 2_000_000)
    with pytest.raises(MinidmlError, match="--checkpoint-words 0"):
        TrainConfig().replace(checkpoint_words=(5, 0))


def test_missing_toml_is_refused(tmp_path):
    with pytest.raises(MinidmlError, match="cannot read config"):
        TrainConfig.toml_settings(tmp_path / "nope.toml")
