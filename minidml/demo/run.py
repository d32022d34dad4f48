"""The built-in default job: mutual learning on the project's own generated grammar corpus.

The corpus comes from :mod:`minidml.demo.grammar` (deterministic by seed, rich in subject–verb and
determiner–noun agreement), so the ``agreement`` suite's minimal pairs, drawn from the same
grammar, show what the students learned: with Muon, 150 steps take them from chance to about
98% (a minute or so on two CPU cores).
"""

from __future__ import annotations

import os
from pathlib import Path

from ..config import TrainConfig
from ..data import default_cache_dir
from ..launch import train
from ..model import Shape
from ..rundir import Run, default_run_dir
from ..trainer import Callback
from .grammar import write_corpus
from .settings import DEMO_SEED, DEMO_SENTENCES, DEMO_STEPS


def demo_config(**overrides) -> TrainConfig:
    """Two differently shaped students (deep-narrow and shallow-wide), learned peer weights."""
    base = TrainConfig(
        students=(Shape(4, 128, 4), Shape(2, 192, 4)),
        mode="wml", alpha=0.5, temperature=1.0,
        vocab_size=None, context=64, batch_size=32, steps=DEMO_STEPS, lr=3e-3, warmup_steps=50,
        log_every=10, eval_every=50, eval_tokens=32_768, save_every=75,
    )
    return base.replace(**overrides)


def demo_corpus(cache_dir: str | os.PathLike | None = None) -> Path:
    """The generated corpus, written once into the cache and reused."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = root / "demo" / f"grammar-{DEMO_SENTENCES}-seed{DEMO_SEED}.txt"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_corpus(path, DEMO_SENTENCES, seed=DEMO_SEED)
    return path


def run_demo(out: str | os.PathLike | None = None, progress: bool = False,
             callbacks: tuple[Callback, ...] = (), force: bool = False, **overrides) -> Run:
    corpus = demo_corpus()
    return train(corpus, out or default_run_dir(["demo"]), demo_config(**overrides),
                 progress=progress, callbacks=callbacks, force=force)
