"""Teachers of a ``kd`` run: the champion student of each trained run, frozen."""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .config import TrainConfig
from .errors import MinidmlError
from .model import Student
from .rundir import checkpoint_words, load
from .tokenizer import Tokenizer


def load_teachers(paths: Sequence[str | os.PathLike], device: str = "cpu"
                  ) -> tuple[list[Student], Tokenizer, list[dict[str, Any]]]:
    """The champion student of each teacher run, their common tokenizer, and a record of
    each (run, student, step, shape) for ``config.json``."""
    models, records, tokenizer = [], [], None
    for path in paths:
        try:
            run = load(path, device)
        except MinidmlError as e:
            raise MinidmlError(f"--teacher {path}: {e}") from None
        if tokenizer is not None and run.tokenizer.sha256 != tokenizer.sha256:
            raise MinidmlError(f"--teacher {path}: its tokenizer differs from that of --teacher "
                               f"{paths[0]}; teachers of one student must share a tokenizer")
        tokenizer = tokenizer or run.tokenizer
        i = run.champion
        models.append(run.students[i])
        ckpt = Path(path) / "checkpoints" / f"step-{run.step:08d}"  # the one loaded
        try:
            digest = hashlib.sha256((ckpt / f"student-{i}.pt").read_bytes()).hexdigest()
        except OSError:
            raise MinidmlError(f"--teacher {path}: its checkpoint of step {run.step} was "
                               "removed while being read (the teacher is still training?); "
                               "distil from a finished run") from None
        records.append({"run": str(path), "student": i, "step": run.step,
                        "n_params": run.students[i].config.n_params,
                        "shape": dataclasses.asdict(run.config.students[i]),
                        "sha256": digest,
                        # what the teacher's run read to train it (None: not recorded)
                        "words_total": checkpoint_words(ckpt).get("words_total")})
    if tokenizer is None:
        raise MinidmlError("--mode kd: needs at least one --teacher RUN_DIR (a trained run)")
    return models, tokenizer, records


def check_teachers(cfg: TrainConfig, teachers: list[Student], teacher_tok: Tokenizer | None,
                    tokenizer: Tokenizer) -> None:
    if teacher_tok is not None and teacher_tok.sha256 != tokenizer.sha256:
        raise MinidmlError(f"--teacher {cfg.teachers[0]}: the teacher's tokenizer "
                           f"(vocabulary {teacher_tok.vocab_size}) is not the student's "
                           f"({tokenizer.vocab_size}); distil with the teacher's tokenizer "
                           "(drop --vocab-size or the tokenizer you gave)")
    for path, t in zip(cfg.teachers, teachers, strict=True):
        if t.config.context < cfg.context:
            raise MinidmlError(f"--teacher {path}: its context ({t.config.context}) is shorter "
                               f"than --context {cfg.context}; use --context "
                               f"{t.config.context} or less")
