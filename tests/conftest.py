"""Shared fixtures: the evaluation data directory and a token cache that never touches $HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared evaluation data: ``$MINIDML_DATA_DIR``, else ``../shared/data`` beside the repo.

    Skips when neither is there, but fails when the variable names a missing directory: a
    misconfigured run must not pass by skipping.
    """
    env = os.environ.get("MINIDML_DATA_DIR")
    if env:
        path = Path(env)
        if not path.is_dir():
            pytest.fail(f"MINIDML_DATA_DIR={env!r} is set but is not a directory", pytrace=False)
        return path
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"no evaluation data: set MINIDML_DATA_DIR (looked for {path})")
    return path


@pytest.fixture(scope="session", autouse=True)
def _token_cache(tmp_path_factory):
    """Point the token cache at a per-session temporary directory for every test."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINIDML_CACHE_DIR", str(tmp_path_factory.mktemp("token-cache")))
        yield


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """The tests' models are tiny: threads gain nothing, and on a busy machine every parallel
    region of a two-thread pool can wait a scheduler slice for its second thread. So one
    thread here and in the commands the tests start; ``make test`` runs one worker a core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OMP_NUM_THREADS", "1")
        yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def grammar_corpus(tmp_path_factory) -> Path:
    from minidml.demo.grammar import write_corpus

    return write_corpus(tmp_path_factory.mktemp("grammar") / "grammar.txt", 6_000, seed=0)


@pytest.fixture(scope="session")
def tiny_run(grammar_corpus, tmp_path_factory):
    """Two tiny students trained for a few steps: a real run directory, quickly."""
    import minidml
    from minidml import Shape, TrainConfig

    cfg = TrainConfig(students=(Shape(1, 32, 2), Shape(1, 48, 2)), context=32, batch_size=8,
                      vocab_size=400, warmup_steps=2, eval_every=10, eval_tokens=1024,
                      steps=10)
    return minidml.train(grammar_corpus, tmp_path_factory.mktemp("runs") / "tiny", cfg)


def _require_extra(extra: str, *modules: str):
    """Import the modules of an optional extra. ``make test`` installs the extras, so in CI
    (where ``MINIDML_DATA_DIR`` is set) a missing one is a failure; elsewhere the test skips."""
    import importlib

    try:
        return [importlib.import_module(m) for m in modules]
    except ImportError as e:
        if os.environ.get("MINIDML_DATA_DIR"):
            pytest.fail(f"the {extra} extra is missing ({e}); `make test` installs every "
                        "extra the tests use", pytrace=False)
        pytest.skip(f"the {extra} extra is not installed ({e}): pip install 'minidml[{extra}]'")


@pytest.fixture(scope="session")
def require_extra():
    """``require_extra("plot", "matplotlib")``: the imported modules, or a skip/fail."""
    return _require_extra

