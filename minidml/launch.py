"""Starting or resuming a run: :func:`train` makes (or reopens) the run directory, the
tokenizer, the token file, the batches and the students, and hands them to the
:class:`~minidml.trainer.Trainer`."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from .config import TrainConfig
from .data import (
    Batches,
    corpus_files,
    count_words,
    fingerprint,
    read_lines,
    tokenize_corpus,
)
from .decisions import decide
from .distributed import Comm, session
from .documents import documents
from .errors import MinidmlError
from .lock import Staged, hold, hold_new
from .model import Student
from .rundir import (
    Run,
    check_outside_corpus,
    check_resume_config,
    check_tokenizer,
    default_run_dir,
    new_out_dir,
    prepare_run_dir,
    read_run_config,
    recorded_compile,
    recorded_precision,
    replaceable,
    stopped_before_start,
    student_configs,
    write_run_files,
)
from .runtime import resolve_device
from .search import plan
from .teachers import check_teachers, load_teachers
from .tokenizer import Tokenizer
from .tracking import check_available as check_trackers
from .tracking import make_trackers
from .trainer import Callback, Trainer
from .words import WordCount, check_corpus, milestones


def train(corpus: str | os.PathLike | Sequence[str | os.PathLike],
          out: str | os.PathLike | None = None, config: TrainConfig | None = None, *,
          resume: bool = False, force: bool = False, progress: bool = False,
          callbacks: Sequence[Callback] = (), cache_dir: str | os.PathLike | None = None,
          on_start: Callable[[Path], None] | None = None,
          tokenizer: Tokenizer | str | os.PathLike | None = None, **overrides: Any) -> Run:
    """Train students on ``corpus`` (paths to text, .gz/.xz files or directories).

    ``config`` (default :class:`TrainConfig`) is updated with ``overrides``. The run goes to
    ``out`` or to a new directory under ``runs/``. With ``resume=True`` an existing run is
    continued exactly where its last checkpoint left it. ``tokenizer`` (a
    :class:`Tokenizer` or a ``.model`` file) is used instead of training one, so that several
    runs share it; in ``kd`` mode the teachers' tokenizer is the default. Returns the
    trained :class:`Run`.

    Launched by ``torchrun``, every process calls this: the students are placed across the
    ranks (see :mod:`minidml.distributed`), rank 0 writes the run directory, and every rank
    returns the same :class:`Run`; ``on_start`` is called on rank 0 only.
    """
    paths = [corpus] if isinstance(corpus, str | os.PathLike) else list(corpus)
    cfg = (config or TrainConfig()).replace(**overrides)
    cfg = cfg.replace(teachers=tuple(str(Path(t).resolve()) for t in cfg.teachers))
    if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
        tokenizer = Tokenizer.load(tokenizer)
    files = corpus_files(paths)
    check_trackers(cfg.log_to)  # before anything is written
    # a world of one unless launched by torchrun; rank 0 holds the run directory throughout
    with session(cfg.device) as comm, contextlib.ExitStack() as held:

        staged: list[Staged] = []  # rank 0's new directory, until the run can start

        def start() -> tuple[Path, Path, bool, bool]:
            out_dir = Path(out) if out is not None else default_run_dir(paths)
            check_outside_corpus(out_dir, paths)
            again = resume and stopped_before_start(out_dir)  # nothing to resume yet
            if not resume and not out_dir.exists():  # one writer, and no directory until
                staged.append(held.enter_context(hold_new(out_dir)))  # the run can start
                new_out_dir(staged[0].path, False)
                return staged[0].path, out_dir, False, force
            held.enter_context(hold(out_dir))  # one writer: see minidml.lock
            if not resume and replaceable(out_dir, force, keep=[*files, *cfg.teachers]):
                # --force: the run it replaces stays whole until this one can start
                staged.append(held.enter_context(hold_new(out_dir, replaces=True)))
                new_out_dir(staged[0].path, False)
                return staged[0].path, out_dir, False, force
            prepare_run_dir(out_dir, resume and not again, force or again,
                            keep=[*files, *cfg.teachers])
            return out_dir, out_dir, resume and not again, force or again

        work_dir, out_dir, resume, force = comm.on_main(start, share=True)
        try:
            trainer = _setup(files, work_dir, cfg, resume, progress and comm.is_main,
                             callbacks, cache_dir, tokenizer, comm)
            if work_dir != out_dir:
                comm.on_main(staged[0].publish if staged else lambda: None)
                trainer.run_dir = out_dir
        except BaseException:
            if not resume and comm.is_main and not staged:  # nothing half-made stays behind
                shutil.rmtree(out_dir, ignore_errors=True)
            raise
        if on_start is not None and comm.is_main:
            on_start(out_dir)
        trainer.fit()
        # _setup always gives the trainer a tokenizer (its own, a teacher's or a trained one)
        return Run(out_dir, trainer.config, cast(Tokenizer, trainer.tokenizer), trainer.students,
                   trainer.omega, trainer.step, trainer.last_eval)


def _on_main_tokenizer(comm: Comm, make: Callable[[], Tokenizer]) -> Tokenizer:
    """``make()`` on rank 0, the same tokenizer everywhere."""
    if comm.world_size == 1:
        return make()
    return Tokenizer(comm.on_main(lambda: make().to_bytes(), share=True))


def _setup(files: list[Path], out_dir: Path, cfg: TrainConfig, resume: bool, progress: bool,
           callbacks: Sequence[Callback], cache_dir: str | os.PathLike | None,
           tokenizer: Tokenizer | None = None, comm: Comm | None = None) -> Trainer:
    """Tokenizer, token file, batches, students (and teachers) of a new or resumed run.

    With a ``comm`` of several ranks, rank 0 alone reads and writes the run directory and
    trains the tokenizer (sent to the others), and fills the token cache before the others
    read it; every rank builds every student from the same seed."""
    comm = comm or Comm()
    corpus_hash = fingerprint(files)
    teachers: list[Student] = []
    teacher_tok: Tokenizer | None = None
    teacher_meta: list[dict[str, Any]] = []
    if cfg.mode == "kd":
        teachers, teacher_tok, teacher_meta = load_teachers(cfg.teachers, cfg.device)
    if resume:
        meta = comm.on_main(lambda: read_run_config(out_dir), share=True)
        tokenizer = _on_main_tokenizer(comm, lambda: Tokenizer.load(out_dir / "tokenizer.model"))
        check_tokenizer(out_dir, meta, tokenizer)
        # a setting the run predates is what was done then, on both sides of the check
        cfg = cfg.replace(**{k: v for k, v in LEGACY.items() if k not in meta["config"]})
        cfg = _resumed_shapes(cfg, meta, out_dir, tokenizer.vocab_size)
        check_resume_config({**meta, "config": LEGACY | meta["config"]}, cfg, out_dir)
        if meta.get("corpus", {}).get("fingerprint") != corpus_hash:
            raise MinidmlError("--resume: the corpus differs from the one this run was "
                               "trained on; give the same files")
        if len(meta.get("teachers", [])) != len(teacher_meta):
            raise MinidmlError(f"--resume: the run learnt from {len(meta.get('teachers', []))} "
                               f"teacher(s), not {len(teacher_meta)}; give the same --teacher "
                               "runs or start a new run with another --out")
        for then, now in zip(meta.get("teachers", []), teacher_meta, strict=True):
            if {**then, "run": None} != {**now, "run": None}:  # the same weights, moved or not
                raise MinidmlError(f"--resume: teacher {now['run']} has changed since this "
                                   f"run started (student {then.get('student')} at step "
                                   f"{then.get('step')} then, student {now['student']} at "
                                   f"step {now['step']} now); restore it or start a new run")
    else:
        if tokenizer is None:
            tokenizer = teacher_tok
        if tokenizer is None:
            tokenizer = _on_main_tokenizer(comm, lambda: Tokenizer.train(
                corpus_documents(files, cfg), cfg.vocab_size, cfg.tokenizer_type,
                seed=cfg.seed, boundary=cfg.tokenizer_boundary))
        elif cfg.vocab_size is not None and cfg.vocab_size != tokenizer.vocab_size:
            raise MinidmlError(f"--vocab-size {cfg.vocab_size}: the given tokenizer has "
                               f"{tokenizer.vocab_size} pieces; drop --vocab-size")
        cfg = searched_shapes(cfg, tokenizer.vocab_size)
    check_teachers(cfg, teachers, teacher_tok, tokenizer)
    tokens = comm.first_on_main(lambda: tokenize_corpus(
        files, tokenizer, cache_dir, cfg.encoding_errors, progress, cfg.documents,
        cfg.speaker_tags))
    words = comm.first_on_main(lambda: count_words(files, cfg.encoding_errors, cache_dir))
    check_corpus(cfg.track, words, files)
    teacher_words = _teacher_words(cfg, teacher_meta)
    batches = make_batches(tokens, cfg, words)
    scfgs = student_configs(cfg, tokenizer.vocab_size)
    torch.manual_seed(cfg.seed)
    students = [Student(c) for c in scfgs]
    comm.place([c.n_params for c in scfgs], resolve_device(cfg.device),
               (cfg.batch_size, cfg.outer_batch_size or cfg.batch_size), cfg.peer_dtype)
    # trackers first: a callback that stops the run sees the step already tracked
    observers = [*make_trackers(cfg.log_to), *callbacks]
    # a resumed run goes on in the precision and compilation it recorded
    count = cast(WordCount, WordCount.of(cfg, batches, teacher_words))  # the words are known
    decisions = decide(cfg, scfgs, batches, comm,
                       precision=recorded_precision(meta, cfg) if resume else None,
                       compiled=recorded_compile(meta) if resume else None, words=count)
    trainer = Trainer(cfg, students, batches, out_dir, observers, progress, tokenizer=tokenizer,
                      teachers=teachers, comm=comm, decisions=decisions,
                      teacher_words=teacher_words)
    if resume:
        trainer.resume()
        return trainer
    comm.on_main(lambda: write_run_files(out_dir, cfg, scfgs, tokenizer, files, corpus_hash,
                                          batches, trainer.total_steps, teacher_meta,
                                          comm.world_size, trainer.precision_record,
                                          trainer.compile_record,
                                          words_record(cfg, count, trainer.total_steps)))
    return trainer


def words_record(cfg: TrainConfig, count: WordCount, total_steps: int) -> dict[str, Any]:
    """``config.json``'s account of words (:mod:`minidml.words`): the corpus's, the plan's
    per model and in all, the track and which reading of its cap applies, the checkpoints."""
    return {"corpus_words": count.corpus_words, "corpus_tokens": count.corpus_tokens,
            "track": cfg.track, "cap": cfg.words_cap if cfg.track else None,
            "cap_reading": ("every model's reading counts against the track's amount"
                            if cfg.words_cap == "total" else "each model on its own"),
            "planned_per_model": count.per_model(total_steps),
            "planned_total": count.total(total_steps), "teachers": count.teacher_words,
            "checkpoint_words": list(milestones(cfg))}


def _teacher_words(cfg: TrainConfig, teacher_meta: list[dict[str, Any]]) -> int:
    """What the teachers' runs read to train them; under a track that counts every model's
    reading, a teacher that did not record it is refused."""
    unknown = [m["run"] for m in teacher_meta if m.get("words_total") is None]
    if unknown and cfg.track is not None and cfg.words_cap == "total":
        raise MinidmlError(f"--teacher {unknown[0]}: its run did not record the words it "
                           f"read, which the {cfg.track} track counts; retrain it with this "
                           "minidml, or pass --words-cap per-model")
    return sum(int(m.get("words_total") or 0) for m in teacher_meta)


def corpus_documents(files: Sequence[Path], cfg: TrainConfig) -> Iterator[str]:
    """The documents of the corpus under ``cfg``'s splitting rule (what the tokenizer trains
    on and :func:`~minidml.data.tokenize_corpus` encodes)."""
    return documents(read_lines(files, cfg.encoding_errors), cfg.documents, cfg.speaker_tags)


def make_batches(tokens: np.ndarray, cfg: TrainConfig, words: int | None = None) -> Batches:
    """The batches of a token stream under ``cfg``: splits, context, batch size, sampling
    (``words``: the corpus's, for counting words seen)."""
    return Batches(tokens, cfg.context, cfg.batch_size, val_fraction=cfg.val_fraction,
                   holdout_fraction=cfg.holdout_fraction, seed=cfg.seed, sampling=cfg.sampling,
                   words=words)


# settings that runs recorded before the setting existed: what they did then
LEGACY = {"sampling": "uniform", "documents": "line", "speaker_tags": "keep",
          "optimizer": "adamw"}


def _resumed_shapes(cfg: TrainConfig, meta: dict[str, Any], out_dir: Path, vocab_size: int
                    ) -> TrainConfig:
    """A resumed run with a ``budget`` keeps the shapes it started with (the search of a later
    minidml may pick others for the same budget); otherwise the budget is searched."""
    saved = TrainConfig.from_dict(meta["config"], str(out_dir / "config.json"))
    if cfg.budget is not None and (saved.budget, saved.budget_scheme, saved.n_students) == (
            cfg.budget, cfg.budget_scheme, cfg.n_students):
        return cfg.replace(students=saved.students)
    return searched_shapes(cfg, vocab_size)


def searched_shapes(cfg: TrainConfig, vocab_size: int) -> TrainConfig:
    """With a ``budget``, the config whose students are the searched shapes
    (:func:`minidml.search.plan`); else ``cfg``."""
    if cfg.budget is None:
        return cfg
    found = plan(cfg.budget, cfg.n_students, vocab_size, scheme=cfg.budget_scheme)
    return cfg.replace(students=tuple(c.shape for c in found))
