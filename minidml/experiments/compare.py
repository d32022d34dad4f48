"""The paper's experiment as one call: does teacher-less mutual learning match distillation?

:func:`compare` trains, on one corpus, with one tokenizer, the same data order and the same
number of training tokens per model, four arms:

``single``  the largest searched student (target N/2) alone;
``kd``      a teacher of the whole budget N trained alone, then the N/2 student distilled
            from it (BabyLlama-style: ``(1-α)·CE + α·T²·KL(p_teacher ‖ p_student)``);
``dml``     K students of searched shapes (N/2, N/3, …), equal fixed peer weights ω;
``wml``     the same K students, ω learned by bi-level optimisation;

and evaluates every model (and each ensemble, and the teacher) on the chosen suites. The
champion of an arm is its student with the lowest validation loss: chosen on held-out text,
never on a test suite.

An ablation adds :class:`Variant` arms: one of those four with one setting changed (wml with
α = 0.25, with the first-order hypergradient, ...), trained on the same data with the same
students and compared with it in the report. The comparison directory holds::

    compare.json                    the settings (a resumed comparison keeps them, or adds
                                    variants or seeds)
    tokenizer.model                 the one tokenizer of every arm
    seed-S/ARM/                     each arm's run directory (seed-S/teacher/ for kd's teacher,
                                    seed-S/wml-alpha=0.25/ for a variant)
    seed-S/ARM/eval.json            its evaluation (lm-evaluation-harness-shaped)
    seed-S/ARM/eval.samples.jsonl   every scored pair's log-likelihoods
    seed-S/ARM/eval.verdicts.json   whether each was scored right (the paired tests)
    seed-S/ARM/arm.json             its summary; written last, so it marks the arm as finished
    report.json, report.md          every arm and model: scores ± stderr, parameters,
                                    validation loss, training FLOPs and wall time; paired
                                    differences between arms (minidml.experiments.paired)

With ``resume=True`` finished arms are reused and an unfinished one continues from its last
checkpoint; variants and seeds may be added to a comparison that way, and only they are
trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from .. import _io, tracking
from .._version import __version__
from ..config import TrainConfig
from ..data import Batches, corpus_files, count_words, fingerprint, tokenize_corpus, unigram_entropy
from ..decisions import steps_for
from ..errors import MinidmlError
from ..evaluation.runner import evaluate, require_suites
from ..evaluation.scoring import ENSEMBLE, student_label
from ..launch import LEGACY, corpus_documents, make_batches, train
from ..lock import hold
from ..model import Shape, StudentConfig
from ..rundir import check_outside_corpus, latest_checkpoint, load, new_out_dir, read_metrics
from ..runtime import resolve_device
from ..search import Candidate, plan, search
from ..tokenizer import Tokenizer
from ..tracking import check_available as check_trackers
from ..words import WordCount
from . import curves, paired
from .config import (
    ARMS,
    TEACHER,
    VARIABLE,
    CompareConfig,
    Variant,
    arm_dir_name,
    reading_shares,
)
from .report import build_report, format_report
from .scores import model_scores


# ----------------------------------------------------------------------------- FLOPs
def training_flops(cfg: StudentConfig, tokens: int, context: int) -> float:
    """Forward + backward FLOPs of training one model on ``tokens`` tokens."""
    return cfg.flops_per_token(context) * tokens


def forward_flops(cfg: StudentConfig, tokens: int, context: int) -> float:
    """A forward pass is a third of forward + backward."""
    return training_flops(cfg, tokens, context) / 3


def outer_flops(cfgs: Sequence[StudentConfig], n_outer: int, train_tokens: int,
                holdout_tokens: int, context: int, hypergrad: str = "exact") -> float:
    """An estimate of WML's outer steps: per student, a held-out forward + backward at θ',
    and for the second-order term (not ``first-order``) two more passes over the training
    batch: a JVP (``exact``) or two perturbed forwards (``fd``)."""
    second = 0 if hypergrad == "first-order" else 2
    return n_outer * sum(training_flops(c, holdout_tokens, context)
                         + second * forward_flops(c, train_tokens, context) for c in cfgs)


# ----------------------------------------------------------------------------- the run
def compare(corpus: str | os.PathLike | Sequence[str | os.PathLike], out: str | os.PathLike,
            config: CompareConfig, *, resume: bool = False, force: bool = False,
            progress: bool = False, data_dir: str | os.PathLike | None = None,
            cache_dir: str | os.PathLike | None = None,
            on_event: Callable[[str], None] | None = None,
            reuse_from: str | os.PathLike | None = None,
            only: Sequence[str] | None = None,
            only_seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """Train and evaluate every arm of ``config`` on ``corpus``; returns the report (also
    written to ``out/report.json`` and ``out/report.md``).

    ``reuse_from``: another comparison on the same corpus whose finished runs this one takes
    where one of its own would train exactly as that one did (:func:`_reusable`), such as
    dml's and wml's under ``--words per-model`` for ``--words total`` at K times the tokens;
    they are linked, not trained again, and evaluated here.

    ``only``: the arms (names as in the report: ``kd``, ``wml alpha=0.25``) this call trains
    and evaluates, in every seed; the others wait for a later call with ``resume=True``, and
    the report (``unfinished`` lists what waits) covers the finished arms. A comparison too
    long for one sitting is so run in the pieces that fit. ``only_seeds``: likewise the seeds
    (0 for the first, as the report counts them) whose arms this call trains; with ``only``,
    the named arms of those seeds."""
    say = on_event or (lambda message: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MinidmlError("compare: runs in one process; under torchrun, train the arms "
                           "with minidml train instead")
    paths = [corpus] if isinstance(corpus, str | os.PathLike) else list(corpus)
    files = corpus_files(paths)
    out = Path(out)
    check_outside_corpus(out, paths)
    # before hours of training, not after; "all" becomes the suites whose data is present
    config = dataclasses.replace(config, suites=tuple(
        require_suites(config.suites, data_dir, option="--suites")), curve_suites=tuple(
        require_suites(config.curve_suites, data_dir, option="--curve-suites")
        if config.curve_suites else ()))
    check_trackers(config.train.log_to)
    names = [name for name, _, _ in config.arm_specs()]
    unknown = [a for a in only or () if a not in names]
    if unknown:
        raise MinidmlError(f"--only {unknown[0]}: not an arm of this comparison; choose "
                           f"among {', '.join(names)}")
    beyond = [s for s in only_seeds or () if not 0 <= s < config.seeds]
    if beyond:
        raise MinidmlError(f"--only-seeds {beyond[0]}: this comparison has seeds 0 to "
                           f"{config.seeds - 1}; choose among them (or raise --seeds)")
    settings = {"compare": config.to_dict(), "corpus": {"fingerprint": fingerprint(files)}}
    source = None if reuse_from is None else _reuse_source(Path(reuse_from), settings)
    with hold(out):  # one writer per comparison (see minidml.lock)
        _prepare(out, settings, resume, force, keep=files)
        say(f"comparison directory: {out}")
        base = config.train
        try:
            tokenizer = _tokenizer(out, files, base, say, source)
            shapes, teacher = _searched_shapes(out, config, tokenizer.vocab_size)
            say("students: " + "; ".join(f"{c.shape} ({c.n_params / 1e6:.2f}M)" for c in shapes)
                + f"; kd teacher: {teacher.shape} ({teacher.n_params / 1e6:.2f}M)")
            tokens = tokenize_corpus(files, tokenizer, cache_dir, base.encoding_errors, progress,
                                     base.documents, base.speaker_tags)
            # T: what one model reads (--tokens, or one pass); the arms' steps follow from it
            # the corpus's words as BabyLM counts them: the curves' checkpoints by words
            batches = make_batches(tokens, base, count_words(files, base.encoding_errors,
                                                             cache_dir))
            steps = steps_for(base, batches)
        except BaseException:
            if not resume:  # nothing was trained yet: leave nothing half-made behind
                shutil.rmtree(out, ignore_errors=True)
            raise
        # a piece: one arm of one seed; ``finished`` holds the finished pieces' summaries
        pieces = [(s, spec) for s in range(config.seeds) for spec in config.arm_specs()]
        finished: dict[int, dict[str, Any]] = {}

        def unfinished() -> list[str]:
            return [f"seed {s} {name}" for i, (s, (name, _, _)) in enumerate(pieces)
                    if i not in finished]

        def write() -> dict[str, Any]:
            """The report of the finished pieces; it lists the others as unfinished."""
            report = build_report(config, settings, tokenizer, shapes, teacher,
                                  list(finished.values()),
                                  unigram_entropy(tokens), out)
            report["corpus"] = {"files": [str(f) for f in files], "tokens": int(len(tokens)),
                                **settings["corpus"]}
            report["paired"] = paired.seed_differences(report)
            report["curves"] = curves.table(report)
            report["paired_examples"] = paired.example_differences(report, out, config.suites)
            report["unfinished"] = unfinished()
            text = format_report(report)  # before either file: both are written, or neither
            _io.write_json(out / "report.json", report)
            with _io.atomic_open(out / "report.md", "w") as f:
                f.write(text)
            say(f"report: {out / 'report.md'}")
            return report

        for i, (s, (name, arm, changes)) in enumerate(pieces):
            arm_dir = out / f"seed-{s}" / arm_dir_name(name)
            summary = _read_summary(arm_dir)
            if summary is None and ((only is not None and name not in only) or (
                    only_seeds is not None and s not in only_seeds)):
                continue
            if summary is None:
                try:
                    summary = _run_arm(name, arm, changes, arm_dir, files,
                                       out / "tokenizer.model", config,
                                       base.replace(seed=base.seed + s), batches, steps,
                                       [c.shape for c in shapes], teacher.shape, resume,
                                       progress, data_dir, cache_dir, say, source)
                except KeyboardInterrupt:
                    # Ctrl-C or SIGTERM: the arm keeps its checkpoint for --resume, and
                    # the report covers the arms finished so far, this call's included
                    if finished:
                        write()
                    raise
            else:
                say(f"[seed {s}] {name}: finished earlier, reused")
            finished[i] = summary
        if len(finished) < len(pieces):  # every piece left is one that --only left out
            say(f"not run now (--only, --only-seeds): {', '.join(unfinished())}")
        if not finished:
            say("no arm has finished: no report yet")
            return {"out": str(out), "arms": [], "unfinished": unfinished()}
        return write()


def _prepare(out: Path, settings: dict[str, Any], resume: bool, force: bool,
             keep: Sequence[Path]) -> None:
    marker = out / "compare.json"
    if resume:
        if not marker.exists():
            raise MinidmlError(f"--resume: {out} holds no comparison to resume; drop --resume")
        try:
            doc = json.loads(marker.read_text(encoding="utf-8"))
            saved = doc["settings"]
            # settings added to TrainConfig since the comparison began take their defaults
            saved["compare"].setdefault("suite_options", {})  # added since it began
            saved["compare"].setdefault("words", "per-model")
            saved["compare"].setdefault("curve_suites", [])
            saved["compare"].setdefault("curve_words", [])
            # ... except those whose default changed: what the comparison did then
            saved["compare"]["train"] = _saved_settings(saved["compare"]["train"], marker)
            had = saved["compare"].setdefault("variants", [])
            now = json.loads(json.dumps(settings))
            # an ablation may grow: new variants are added, the ones it has must stay
            dropped = [Variant(**v).name for v in had if v not in now["compare"]["variants"]]
            # and so may its seeds: the seeds it has are kept, new ones are added
            seeds = int(saved["compare"]["seeds"])
        except (OSError, ValueError, KeyError, TypeError):
            raise MinidmlError(f"{marker}: unreadable; the comparison is damaged") from None
        if dropped:
            raise MinidmlError(f"--resume: the variant {dropped[0]} of {marker} is not asked "
                               "for; give every --vary it was started with (new ones may "
                               "be added)")
        if now["compare"]["seeds"] < seeds:
            raise MinidmlError(f"--resume: {marker} has {seeds} seeds; --seeds may grow, not "
                               f"shrink (give --seeds {seeds} or more)")
        saved["compare"]["variants"] = now["compare"]["variants"]
        saved["compare"]["seeds"] = now["compare"]["seeds"]
        _check_same(json.loads(json.dumps(saved)), now, marker)
        if len(had) != len(now["compare"]["variants"]) or seeds != now["compare"]["seeds"]:
            _io.write_json(marker, doc | {"settings": settings})
        return
    new_out_dir(out, force, keep)
    _io.write_json(marker, {"minidml_version": __version__, "created": _io.utc_now(),
                            "settings": settings})


def _saved_settings(saved: dict[str, Any], where: Path) -> dict[str, Any]:
    """Training settings as written by an earlier minidml (in ``where``), normalised: those
    added since take their defaults, except those whose default changed (:data:`LEGACY`:
    what was done then)."""
    return TrainConfig.from_dict(LEGACY | saved, str(where)).to_dict()


def _searched_shapes(out: Path, config: CompareConfig, vocab_size: int
                     ) -> tuple[list[Candidate], Candidate]:
    """The students' and the kd teacher's shapes: searched when the comparison starts and
    recorded in compare.json, so that a resumed one keeps them whatever the search of the
    minidml that resumes it would pick."""
    marker = out / "compare.json"
    doc = json.loads(marker.read_text(encoding="utf-8"))
    recorded = doc.get("shapes")
    if isinstance(recorded, dict):
        def read(c: dict[str, Any]) -> Candidate:
            shape = Shape(c["n_layers"], c["d_model"], c["n_heads"], c["mlp_ratio"])
            return Candidate(shape, c["n_params"], c["target"], c.get("role", ""))

        try:
            return [read(c) for c in recorded["students"]], read(recorded["teacher"])
        except (KeyError, TypeError):
            raise MinidmlError(f"{marker}: its shapes are unreadable; the comparison is "
                               "damaged") from None
    shapes = plan(config.budget, config.students, vocab_size)
    teacher = search([config.teacher_params or config.budget], vocab_size)[0]
    _io.write_json(marker, doc | {"shapes": {"students": [c.to_dict() for c in shapes],
                                             "teacher": teacher.to_dict()}})
    return shapes, teacher


def _check_same(saved: Any, now: Any, marker: Path, where: str = "") -> None:
    """A resumed comparison must keep its settings (where it runs may change); the first
    difference is named."""
    if isinstance(saved, dict) and isinstance(now, dict):
        for key in sorted(set(saved) | set(now)):
            # where it runs and is tracked may change, and which models the arms still to
            # be evaluated score (finished arms keep their scores)
            if key not in ("device", "log_to", "eval_students"):
                _check_same(saved.get(key), now.get(key), marker, f"{where}.{key}".lstrip("."))
    elif saved != now:
        what = "the corpus" if where.startswith("corpus") else f"setting {where!r}"
        raise MinidmlError(f"--resume: {what} differs from {marker} ({saved!r} there, "
                           f"{now!r} now); use the same options and files, or another --out")


# the settings a comparison's tokenizer is trained from (with its corpus)
_TOKENIZER_SETTINGS = ("vocab_size", "tokenizer_type", "tokenizer_boundary", "seed",
                       "documents", "speaker_tags", "encoding_errors")


def _tokenizer(out: Path, files: list[Path], base: TrainConfig,
               say: Callable[[str], None], source: Path | None = None) -> Tokenizer:
    """The comparison's one tokenizer: made before, or ``source``'s where that comparison
    trained it from the same settings (and corpus: see :func:`_reuse_source`), else
    trained now."""
    path = out / "tokenizer.model"
    if path.exists():
        return Tokenizer.load(path)
    if source is not None and (source / "tokenizer.model").exists():
        doc = json.loads((source / "compare.json").read_text(encoding="utf-8"))
        theirs = _saved_settings(doc["settings"]["compare"]["train"], source / "compare.json")
        mine = base.to_dict()
        if all(theirs[k] == mine[k] for k in _TOKENIZER_SETTINGS):
            say(f"the shared tokenizer: {source / 'tokenizer.model'}, made alike")
            shutil.copy2(source / "tokenizer.model", path)
            return Tokenizer.load(path)
    say("training the shared tokenizer")
    tokenizer = Tokenizer.train(corpus_documents(files, base), base.vocab_size,
                                base.tokenizer_type, seed=base.seed,
                                boundary=base.tokenizer_boundary)
    tokenizer.save(path)
    return tokenizer


def _read_summary(arm_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((arm_dir / "arm.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _train_one(name: str, run_dir: Path, files: list[Path], tokenizer: Path, cfg: TrainConfig,
               steps: int, resume: bool, progress: bool, cache_dir: str | os.PathLike | None,
               say: Callable[[str], None], source: Path | None = None) -> tuple[Any, float]:
    """Train (or continue) one run of ``steps`` steps, or take the same run from ``source``
    (another comparison's directory); returns the loaded run and its training wall time
    (over every resumption)."""
    again = resume and (run_dir / "config.json").exists()
    other = None if again or source is None else source / run_dir.relative_to(
        run_dir.parent.parent)
    if other is not None and _reusable(other, cfg, steps, tokenizer):
        say(f"{name}: the same training as {other}, reused")
        _link_run(other, run_dir)
    else:
        say(f"{name}: {'continuing' if again else 'training'} {cfg.n_students} model(s), mode "
            f"{cfg.mode}")
        train(files, run_dir, cfg, resume=again, force=not again, progress=progress,
              cache_dir=cache_dir, tokenizer=tokenizer)
    logs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "train"]
    seconds = float(logs[-1].get("train_seconds", math.nan)) if logs else math.nan
    # what is evaluated is what was saved: the run as minidml eval would load it
    return load(run_dir, str(resolve_device(cfg.device))), seconds


# what may differ between two runs that train alike: how their length is written (the
# number of steps is compared instead), which checkpoints they keep by words (the source
# must keep those asked for), and where and how they run and report; kd's teachers lie in
# their own comparisons and are compared as runs (_same_teachers)
_LIKE_FOR_LIKE_IGNORES = ("steps", "tokens", "epochs", "max_time", "checkpoint_words",
                          "keep_checkpoints", "device", "log_to", "log_every", "teachers")
# a finished run's evaluations are its comparison's own: not linked
_NOT_LINKED = ("arm.json", "eval.json", paired.SAMPLES_FILE, paired.VERDICTS_FILE, "eval",
               "tensorboard", "*.lock")
# ... unless they are taken with it (_take_evaluated)
_NOT_LINKED_EVALUATED = ("arm.json", "tensorboard", "*.lock")
REUSED = "reused.json"  # in a run taken from another comparison: from where


def _reuse_source(source: Path, settings: dict[str, Any]) -> Path:
    """``--reuse-from``: a comparison on the same corpus."""
    try:
        doc = json.loads((source / "compare.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise MinidmlError(f"--reuse-from {source}: holds no comparison (no readable "
                           "compare.json); give the directory of a minidml compare") from None
    if doc.get("settings", {}).get("corpus") != settings["corpus"]:
        raise MinidmlError(f"--reuse-from {source}: compared on another corpus; give one "
                           "made from the same files")
    return source


def _trained_alike(other: Path, cfg: TrainConfig, steps: int, tokenizer: Path) -> bool:
    """Whether ``other`` is a finished run (of a finished arm) that trained as ``cfg`` over
    ``steps`` steps would, with this tokenizer."""
    try:
        if not (other / "arm.json").exists():
            return False
        meta = json.loads((other / "config.json").read_text(encoding="utf-8"))
        theirs = _saved_settings(meta["config"], other)
        sha = meta["tokenizer"]["sha256"]
        total = int(meta["total_steps"])
    except (OSError, ValueError, KeyError, TypeError, MinidmlError):
        return False
    mine = cfg.to_dict()
    same = all(theirs.get(k) == v for k, v in mine.items() if k not in _LIKE_FOR_LIKE_IGNORES)
    return (same and total == steps and sha == Tokenizer.load(tokenizer).sha256
            and _same_teachers(other, theirs.get("teachers") or (), cfg.teachers, tokenizer))


def _same_teachers(other: Path, theirs: Sequence[str], mine: Sequence[str],
                   tokenizer: Path) -> bool:
    """Whether kd's teachers ``mine`` trained as ``other``'s comparison's did: each the run of
    the same name beside ``other`` (where a comparison keeps kd's teacher, wherever it lay
    when ``other`` trained), trained alike."""
    if len(theirs) != len(mine):
        return False
    for their, our in zip(theirs, mine, strict=True):
        try:
            meta = json.loads((Path(our) / "config.json").read_text(encoding="utf-8"))
            cfg = TrainConfig.from_dict(meta["config"], str(our))
            steps = int(meta["total_steps"])
        except (OSError, ValueError, KeyError, TypeError, MinidmlError):
            return False
        if not _trained_alike(other.parent / Path(their).name, cfg, steps, tokenizer):
            return False
    return True


def _reusable(other: Path, cfg: TrainConfig, steps: int, tokenizer: Path) -> bool:
    """Whether ``other`` trained alike (:func:`_trained_alike`) and still holds its
    checkpoints, every one ``cfg`` asks for by words among them: a run to evaluate here."""
    if not _trained_alike(other, cfg, steps, tokenizer) or not (other / "checkpoints").is_dir():
        return False
    meta = json.loads((other / "config.json").read_text(encoding="utf-8"))
    return set(cfg.checkpoint_words) <= set(meta["config"].get("checkpoint_words") or ())


# the settings under which two comparisons evaluate a run alike
_EVALUATED_ALIKE = ("suites", "suite_options", "eval_students", "eval_limit",
                    "eval_batch_size", "curve_suites")
# what a run evaluated alike keeps of its source's summary: not where it lies, nor how this
# comparison counts its words
_NOT_TAKEN = ("run", "dir", "words", "curve", "tokens_total", "teacher", "reused_from",
              "base_arm", "changes")


def _take_evaluated(other: Path, run_dir: Path, cfg: TrainConfig, steps: int,
                    tokenizer: Path, config: CompareConfig, counts: dict[int, int] | None,
                    count: WordCount | None) -> dict[str, Any] | None:
    """``other``'s summary, where it trained alike (:func:`_trained_alike`) and its
    comparison evaluated it as ``config`` would (the same suites, options and curve suites,
    its champion scored at every step this arm's curve asks for; ``counts`` None: a run
    without a curve, kd's teacher): its record and evaluations are taken into ``run_dir``
    (checkpoints linked where it still has them: a finished comparison's directory without
    its checkpoints is enough), its curve counted as ``config`` counts words; None where it
    cannot be."""
    try:
        theirs = json.loads((other.parent.parent / "compare.json").read_text(
            encoding="utf-8"))["settings"]["compare"]
        summary = json.loads((other / "arm.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    mine = json.loads(json.dumps(config.to_dict()))
    if (any(theirs.get(k) != mine[k] for k in _EVALUATED_ALIKE)
            or not _trained_alike(other, cfg, steps, tokenizer)
            or not any((other / f).exists() for f in (paired.VERDICTS_FILE,
                                                      paired.SAMPLES_FILE))):
        return None
    curve: WordCount | None = None  # the count of this arm's curve, where it has one
    if config.curve_suites and counts is not None and count is not None:
        curve = count
        points = {p["step"]: p for p in summary.get("curve", [])}
        targets = curves.targets(counts, count, steps)
        if any(step not in points for step, _ in targets):
            return None
    _link_run(other, run_dir, evaluations=True)
    summary = {k: v for k, v in summary.items() if k not in _NOT_TAKEN}
    summary["run"] = str(run_dir)
    if curve is not None:
        summary["curve"] = [curves.point(milestone, step, curve, config.words,
                                         points[step]["champion"], points[step]["scores"])
                            for step, milestone in targets]
    return summary


def _link_run(other: Path, run_dir: Path, evaluations: bool = False) -> None:
    """``other``'s run files in ``run_dir``: its checkpoints hard-linked where the file
    system allows (nothing writes a finished checkpoint again), the rest copied (its
    evaluations too with ``evaluations``); made under a temporary name and renamed, so that
    an interrupted copy is never taken for a run."""
    checkpoints = other / "checkpoints"
    making = run_dir.with_name(f".{run_dir.name}.reusing")
    shutil.rmtree(making, ignore_errors=True)

    def link(src: str, dst: str) -> None:
        try:
            if Path(src).is_relative_to(checkpoints):
                os.link(src, dst)
                return
        except OSError:
            pass
        shutil.copy2(src, dst)

    skip = _NOT_LINKED_EVALUATED if evaluations else _NOT_LINKED
    shutil.copytree(other, making, ignore=shutil.ignore_patterns(*skip),
                    copy_function=link)
    _io.write_json(making / REUSED, {"from": str(other.resolve()), "at": _io.utc_now()})
    shutil.rmtree(run_dir, ignore_errors=True)  # holds no run (no config.json) of its own
    making.rename(run_dir)


def arm_steps(config: CompareConfig, arm: str, steps: int) -> tuple[int, int]:
    """(each student's, kd's teacher's) steps, when one model reading T tokens takes
    ``steps``: under ``config.words`` (:func:`~minidml.experiments.config.reading_shares`),
    whole steps rounded down, so that an arm's models together never read more than T."""
    student, teacher = reading_shares(arm, config.students, config.words)
    return max(1, int(student * steps)), max(1, int(teacher * steps))


def _run_arm(name: str, arm: str, changes: dict[str, Any], arm_dir: Path, files: list[Path],
             tokenizer: Path, config: CompareConfig, base: TrainConfig, batches: Batches,
             steps: int,
             shapes: list[Shape], teacher: Shape, resume: bool, progress: bool,
             data_dir: str | os.PathLike | None, cache_dir: str | os.PathLike | None,
             say: Callable[[str], None], source: Path | None = None) -> dict[str, Any]:
    """Train (or take from ``source``) and evaluate arm ``name``: ``arm`` with the settings
    ``changes`` (a variant's; kd's teacher, shared by kd and its variants, keeps the base
    settings), its models reading what ``config.words`` gives them of the ``steps`` one model
    takes to read T (of ``batches``), its champion's curve scored at its checkpoints by
    words."""
    seed_dir = arm_dir.parent
    label = f"[seed {seed_dir.name.removeprefix('seed-')}] {name}"
    wall = 0.0
    teacher_run = None
    common = dict(budget=None, teachers=())
    student_steps, teacher_steps = arm_steps(config, arm, steps)

    def length(cfg: TrainConfig, n: int) -> TrainConfig:
        """``n`` steps (the base's own length where that is all of T), validated
        ``eval_points`` times (the same points per arm)."""
        if n != steps:
            cfg = cfg.replace(steps=n, tokens=None, epochs=None, max_time=None)
        if config.eval_points is None:
            return cfg
        return cfg.replace(eval_every=max(1, n // config.eval_points))

    def taken(run_dir: Path, cfg: TrainConfig, n: int, counts: dict[int, int] | None,
              count: WordCount | None, name: str) -> dict[str, Any] | None:
        """The same run and evaluations from ``--reuse-from``'s comparison, where it has
        them (not where this call resumes its own)."""
        if source is None or resume and (run_dir / "config.json").exists():
            return None
        other = source / seed_dir.name / run_dir.name
        summary = _take_evaluated(other, run_dir, cfg, n, tokenizer, config, counts, count)
        if summary is not None:
            say(f"{name}: the same training and evaluation as {other}, reused")
        return summary

    teacher_dir = seed_dir / TEACHER
    tcfg = length(base.replace(students=(teacher,), mode="single", **common), teacher_steps)

    def kd_teacher(take: bool) -> dict[str, Any]:
        """kd's teacher, taken from ``--reuse-from`` with its evaluations (``take``) or
        trained (or reused to train from) and evaluated here; its summary kept beside it."""
        name = f"{label} teacher"
        summary = taken(teacher_dir, tcfg, teacher_steps, None, None, name) if take else None
        if summary is None:
            run, seconds = _train_one(name, teacher_dir, files, tokenizer, tcfg, teacher_steps,
                                      resume, progress, cache_dir, say, source)
            summary = _evaluate(run, TEACHER, config, data_dir, progress, seconds, say, name)
        summary["dir"] = f"{seed_dir.name}/{TEACHER}"
        _io.write_json(teacher_dir / "arm.json", summary)
        return summary

    if arm == "kd":
        teacher_run = _read_summary(teacher_dir) or kd_teacher(take=True)
        cfg = base.replace(students=(shapes[0],), mode="kd", budget=None,
                           teachers=(str(teacher_dir),))
    elif arm == "single":
        cfg = base.replace(students=(shapes[0],), mode="single", **common)
    else:
        cfg = base.replace(students=tuple(shapes), mode=arm, **common)
    # a comparison's batches know their corpus's words (count_words)
    count = WordCount(cast(int, batches.corpus_words), len(batches.tokens), cfg.tokens_per_step,
                      cfg.n_students)
    if arm == "kd":  # what the teacher read counts in the total
        count = dataclasses.replace(count, teacher_words=count.per_model(teacher_steps))
    counts = {}
    if config.curve_suites:
        counts = curves.arm_counts(config.curve_words or curves.DEFAULT_WORDS, count,
                                   student_steps, config.words)
        cfg = cfg.replace(checkpoint_words=tuple(sorted(set(counts.values()))))
    cfg = length(cfg, student_steps).replace(**changes)
    summary = taken(arm_dir, cfg, student_steps, counts, count, label)
    if summary is None:
        if teacher_run is not None and latest_checkpoint(teacher_dir) is None:
            # taken from a record without its checkpoints, and its student trains here
            shutil.rmtree(teacher_dir)
            teacher_run = kd_teacher(take=False)
        run, wall = _train_one(label, arm_dir, files, tokenizer, cfg, student_steps, resume,
                               progress, cache_dir, say, source)
        summary = _evaluate(run, name, config, data_dir, progress, wall, say, label)
        if config.curve_suites:
            summary["curve"] = curves.score_points(
                arm_dir, run, counts, count, config.words, config.curve_suites,
                data_dir=data_dir, limit=config.eval_limit,
                batch_size=config.eval_batch_size, progress=progress, say=say, label=label)
    summary["words"] = config.words
    if (arm_dir / REUSED).exists():
        summary["reused_from"] = json.loads((arm_dir / REUSED).read_text())["from"]
    summary["tokens_total"] = summary["tokens_per_model"] * count.models + (
        teacher_run["tokens_per_model"] if teacher_run is not None else 0)
    if changes:
        summary |= {"base_arm": arm, "changes": changes}
    summary["dir"] = f"{seed_dir.name}/{arm_dir.name}"  # relative: the directory may move
    if teacher_run is not None:
        summary["teacher"] = teacher_run
    _io.write_json(arm_dir / "arm.json", summary)
    return summary


def _evaluate(run: Any, arm: str, config: CompareConfig, data_dir: str | os.PathLike | None,
              progress: bool, wall: float, say: Callable[[str], None], label: str
              ) -> dict[str, Any]:
    """Evaluate every model of ``run``; the arm's summary for the report."""
    t0 = time.perf_counter()
    say(f"{label}: evaluating on {', '.join(config.suites)}")
    results = evaluate(run, config.suites, student=config.eval_students, data_dir=data_dir,
                       limit=config.eval_limit, batch_size=config.eval_batch_size,
                       progress=progress, options=config.suite_options)
    results.write(run.path / "eval.json")
    results.write_samples(run.path / paired.SAMPLES_FILE)  # for the per-example paired tests
    paired.write_verdicts(run.path / paired.VERDICTS_FILE, paired.results_verdicts(results))
    failed = [f"{o.spec.name}: {o.error}" for o in results.outcomes if o.status != "ok"]
    if failed:
        raise MinidmlError(f"{label}: evaluation did not complete ({'; '.join(failed)}); fix "
                           "it (e.g. --data-dir) and continue with --resume")
    doc = results.to_json()
    cfg = run.config
    meta = json.loads((run.path / "config.json").read_text(encoding="utf-8"))
    steps = run.step
    tokens = steps * cfg.tokens_per_step
    scfgs = [s.config for s in run.students]
    flops = [training_flops(c, tokens, cfg.context) for c in scfgs]
    extra = {}
    if cfg.mode == "kd":
        teachers = [StudentConfig.from_shape(Shape(**t["shape"]), scfgs[0].vocab_size,
                                             cfg.context) for t in meta["teachers"]]
        # the teachers run once per batch, for all students
        extra["teacher_forward_flops"] = sum(forward_flops(t, tokens, cfg.context)
                                             for t in teachers)
    if cfg.mode == "wml":
        n_outer = steps // cfg.outer_every
        held = (cfg.outer_batch_size or cfg.batch_size) * cfg.context
        extra["outer_flops_estimate"] = outer_flops(scfgs, n_outer, cfg.tokens_per_step,
                                                    held, cfg.context, cfg.hypergrad)
    val = (run.last_eval or {}).get("val_loss", [math.nan] * len(scfgs))
    models = []
    for i, c in enumerate(scfgs):
        lb = student_label(i)
        models.append({"label": lb, "shape": dataclasses.asdict(c.shape), "n_params": c.n_params,
                       "val_loss": val[i], "champion": i == run.champion,
                       "omega": float(run.omega[i]),
                       "scores": model_scores(doc, lb, config.suites)})
    if len(scfgs) > 1:
        models.append({"label": ENSEMBLE, "n_params": sum(c.n_params for c in scfgs),
                       "val_loss": (run.last_eval or {}).get("ensemble_val_loss", math.nan),
                       "champion": False, "scores": model_scores(doc, ENSEMBLE, config.suites)})
    summary = {"arm": arm, "seed": cfg.seed, "run": str(run.path), "mode": cfg.mode,
               "steps": steps, "tokens_per_model": tokens,
               "alpha": cfg.kl_weight,
               "temperature": cfg.softmax_temperature, "models": models,
               "train_flops": sum(flops), **extra, "train_seconds": round(wall, 1),
               "eval_seconds": round(time.perf_counter() - t0, 1)}
    tracking.sync(run.path, {f"{suite}/{m['label']}": m["scores"][suite]["score"]
                             for m in models for suite in config.suites
                             if suite in m["scores"]})
    say(f"{label}: done (" + ", ".join(
        f"{m['label']} {_fmt_scores(m['scores'], config.suites)}" for m in models) + ")")
    return summary


def _fmt_scores(scores: dict[str, Any], suites: Sequence[str]) -> str:
    return " ".join(f"{s}={100 * scores[s]['score']:.1f}" for s in suites if s in scores)




__all__ = ["ARMS", "VARIABLE", "CompareConfig", "Variant", "compare", "format_report"]
