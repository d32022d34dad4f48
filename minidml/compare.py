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

    compare.json                    the settings (a resumed comparison keeps them, or adds variants)
    tokenizer.model                 the one tokenizer of every arm
    seed-S/ARM/                     each arm's run directory (seed-S/teacher/ for kd's teacher,
                                    seed-S/wml-alpha=0.25/ for a variant)
    seed-S/ARM/eval.json            its evaluation (lm-evaluation-harness-shaped)
    seed-S/ARM/eval.samples.jsonl   every scored pair's log-likelihoods (the paired tests)
    seed-S/ARM/arm.json             its summary; written last, so it marks the arm as finished
    report.json, report.md          every arm and model: scores ± stderr, parameters,
                                    validation loss, training FLOPs and wall time; paired
                                    differences between arms (minidml.paired)

With ``resume=True`` finished arms are reused and an unfinished one continues from its last
checkpoint; variants may be added to a comparison that way, and only they are trained.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__, _io, paired
from .config import TrainConfig, default_temperature
from .data import corpus_files, fingerprint, tokenize_corpus, unigram_entropy
from .devices import resolve_device
from .errors import MinidmlError
from .evaluation import evaluate, require_suites
from .launch import corpus_documents, make_batches, train
from .model import Shape, StudentConfig
from .rundir import load, new_out_dir, read_metrics
from .schedule import steps_for
from .scoring import ENSEMBLE, student_label
from .search import Candidate, format_count, plan, search
from .tokenizer import Tokenizer
from .tracking import check_available as check_trackers
from .tracking import log_scores

ARMS = ("single", "kd", "dml", "wml")
TEACHER = "teacher"
DEFAULT_SUITES = ("blimp", "blimp-supplement", "ewok")
OUTER = ("hypergrad", "unroll", "outer_every", "outer_lr", "outer_lr_schedule",
         "outer_objective", "outer_batch_size")  # only wml has an outer loop
# what a variant may change; the rest (data, tokenizer, students, tokens) keeps arms comparable
VARIABLE = ("alpha", "alpha_warmup", "temperature", "lr", "min_lr_ratio", "warmup_steps",
            "weight_decay", "grad_clip", *OUTER)


@dataclass(frozen=True)
class Variant:
    """An extra arm: ``arm`` with the training setting ``key`` changed to ``value``."""

    arm: str
    key: str
    value: Any

    @property
    def name(self) -> str:
        """How the report names it, e.g. ``wml alpha=0.25``."""
        return f"{self.arm} {self.key}={self.value}"

    @classmethod
    def parse(cls, text: str) -> tuple[Variant, ...]:
        """``[ARM:]KEY=V1[,V2...]`` (ARM defaults to wml; KEY as in TrainConfig, ``-`` or
        ``_``): one variant per value."""
        arm, _, rest = text.rpartition(":")
        key, eq, values = rest.partition("=")
        key = key.strip().replace("-", "_")
        if not eq or not key or not values.strip():
            raise MinidmlError(f"--vary {text!r}: write [ARM:]KEY=VALUE[,VALUE...], e.g. "
                               "alpha=0.25,0.75 or wml:hypergrad=fd")
        return tuple(cls(arm.strip() or "wml", key,
                         TrainConfig.parse_value(key, v.strip(), f"--vary {text!r}"))
                     for v in values.split(","))


def arm_dir_name(name: str) -> str:
    """The directory of an arm under ``seed-S/``: ``wml alpha=0.25`` -> ``wml-alpha=0.25``."""
    return name.replace(" ", "-")


@dataclass(frozen=True)
class CompareConfig:
    """What a comparison runs; ``train`` holds every training setting the arms share (its
    ``students``, ``mode``, ``teachers`` and ``budget`` are set per arm)."""

    budget: int
    students: int = 4
    seeds: int = 1
    arms: tuple[str, ...] = ARMS
    suites: tuple[str, ...] = DEFAULT_SUITES
    teacher_params: int | None = None  # kd's teacher; default: the whole budget N
    eval_limit: int | None = None  # at most this many examples per task
    eval_batch_size: int = 64
    eval_points: int | None = 10  # validation this many times per run (None: eval_every)
    train: TrainConfig = field(default_factory=TrainConfig)
    variants: tuple[Variant, ...] = ()  # ablation arms, run after the arms they vary

    def __post_init__(self) -> None:
        if self.students < 2:
            raise MinidmlError(f"--students {self.students}: mutual learning needs at least 2")
        if self.seeds < 1:
            raise MinidmlError(f"--seeds {self.seeds}: must be at least 1")
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown or not self.arms or len(set(self.arms)) != len(self.arms):
            raise MinidmlError(f"--arms {','.join(self.arms)}: choose each of "
                               f"{', '.join(ARMS)} at most once")
        if self.teacher_params is not None and self.teacher_params < 1:
            raise MinidmlError("--teacher-params: must be a positive number")
        if self.eval_limit is not None and self.eval_limit < 1:
            raise MinidmlError("--limit: must be at least 1")
        if self.eval_points is not None and self.eval_points < 1:
            raise MinidmlError("--eval-points: must be at least 1")
        for v in self.variants:
            self._check_variant(v)
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise MinidmlError("--vary: " + next(n for n in names if names.count(n) > 1)
                               + " is asked for twice; give each variant once")

    def _check_variant(self, v: Variant) -> None:
        where = f"--vary {v.arm}:{v.key}={v.value}"
        if v.arm not in self.arms:
            raise MinidmlError(f"{where}: a variant is compared with its arm; add {v.arm} to "
                               f"--arms (choose from {', '.join(self.arms)})")
        if v.key not in VARIABLE:
            raise MinidmlError(f"{where}: {v.key} cannot vary (it would change the data or "
                               f"the students); choose from {', '.join(VARIABLE)}")
        TrainConfig.checked({v.key: v.value}, where)  # the type, from Python callers too
        if v.key in OUTER and v.arm != "wml":
            raise MinidmlError(f"{where}: only wml learns ω; vary {v.key} on wml")
        if v.key in ("alpha", "alpha_warmup", "temperature") and v.arm == "single":
            raise MinidmlError(f"{where}: a single student has no KL term; vary it on kd, "
                               "dml or wml")
        own = getattr(self.train, v.key)
        if v.key == "temperature" and own is None:
            own = default_temperature(v.arm)
        if own == v.value:
            raise MinidmlError(f"{where}: that is the {v.arm} arm's own setting; choose "
                               "another value")
        try:
            self.train.replace(**{v.key: v.value})
        except MinidmlError as e:
            raise MinidmlError(f"{where}: {e}") from None

    def arm_specs(self) -> list[tuple[str, str, dict[str, Any]]]:
        """``(name, arm, changed settings)`` of every arm, the variants last."""
        return ([(a, a, {}) for a in self.arms]
                + [(v.name, v.arm, {v.key: v.value}) for v in self.variants])

    def check_train(self, given: Sequence[str]) -> None:
        """Refuse training settings that the arms set themselves (``given``: the keys a
        user set, e.g. in a TOML file)."""
        fixed = [k for k in ("students", "budget", "budget_scheme", "mode", "teachers")
                 if k in given]
        if self.eval_points is not None and "eval_every" in given:
            fixed.append("eval_every")
        if fixed:
            raise MinidmlError(f"compare: {', '.join(fixed)} cannot be set: each arm sets "
                               "it (use --budget, --students, --arms"
                               + (", --eval-points" if "eval_every" in fixed else "") + ")")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["train"] = self.train.to_dict()
        return out


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
            on_event: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train and evaluate every arm of ``config`` on ``corpus``; returns the report (also
    written to ``out/report.json`` and ``out/report.md``)."""
    say = on_event or (lambda message: None)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise MinidmlError("compare: runs in one process; under torchrun, train the arms "
                           "with minidml train instead")
    paths = [corpus] if isinstance(corpus, str | os.PathLike) else list(corpus)
    files = corpus_files(paths)
    out = Path(out)
    # before hours of training, not after; "all" becomes the suites whose data is present
    config = dataclasses.replace(config, suites=tuple(
        require_suites(config.suites, data_dir, option="--suites")))
    check_trackers(config.train.log_to)
    settings = {"compare": config.to_dict(), "corpus": {"fingerprint": fingerprint(files)}}
    _prepare(out, settings, resume, force, keep=files)
    base = config.train
    try:
        tokenizer = _tokenizer(out, files, base, say)
        shapes, teacher = _searched_shapes(out, config, tokenizer.vocab_size)
        say("students: " + "; ".join(f"{c.shape} ({c.n_params / 1e6:.2f}M)" for c in shapes)
            + f"; kd teacher: {teacher.shape} ({teacher.n_params / 1e6:.2f}M)")
        tokens = tokenize_corpus(files, tokenizer, cache_dir, base.encoding_errors, progress,
                                 base.documents, base.speaker_tags)
        if config.eval_points is not None:  # validation curves with the same points per arm
            steps = steps_for(base, make_batches(tokens, base))
            base = base.replace(eval_every=max(1, steps // config.eval_points))
    except BaseException:
        if not resume:  # nothing was trained yet: leave nothing half-made behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    arms: list[dict[str, Any]] = []
    for s in range(config.seeds):
        seed = base.seed + s
        for name, arm, changes in config.arm_specs():
            arm_dir = out / f"seed-{s}" / arm_dir_name(name)
            summary = _read_summary(arm_dir)
            if summary is None:
                summary = _run_arm(name, arm, changes, arm_dir, files,
                                   out / "tokenizer.model", config, base.replace(seed=seed),
                                   [c.shape for c in shapes], teacher.shape, resume, progress,
                                   data_dir, cache_dir, say)
            else:
                say(f"[seed {s}] {name}: finished earlier, reused")
            arms.append(summary)
    report = _report(config, settings, tokenizer, shapes, teacher, arms,
                     unigram_entropy(tokens), out)
    report["corpus"] = {"files": [str(f) for f in files], "tokens": int(len(tokens)),
                        **settings["corpus"]}
    report["paired"] = paired.seed_differences(report)
    report["paired_examples"] = paired.example_differences(report, out)
    _io.write_json(out / "report.json", report)
    with _io.atomic_open(out / "report.md", "w") as f:
        f.write(format_report(report))
    say(f"report: {out / 'report.md'}")
    return report


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
            saved["compare"]["train"] = TrainConfig.from_dict(
                saved["compare"]["train"], str(marker)).to_dict()
            had = saved["compare"].setdefault("variants", [])
            now = json.loads(json.dumps(settings))
            # an ablation may grow: new variants are added, the ones it has must stay
            dropped = [Variant(**v).name for v in had if v not in now["compare"]["variants"]]
        except (OSError, ValueError, KeyError, TypeError):
            raise MinidmlError(f"{marker}: unreadable; the comparison is damaged") from None
        if dropped:
            raise MinidmlError(f"--resume: the variant {dropped[0]} of {marker} is not asked "
                               "for; give every --vary it was started with (new ones may "
                               "be added)")
        saved["compare"]["variants"] = now["compare"]["variants"]
        _check_same(json.loads(json.dumps(saved)), now, marker)
        if len(had) != len(now["compare"]["variants"]):
            _io.write_json(marker, doc | {"settings": settings})
        return
    new_out_dir(out, force, keep)
    _io.write_json(marker, {"minidml_version": __version__, "created": _io.utc_now(),
                            "settings": settings})


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
            if key not in ("device", "log_to"):  # where it runs and is tracked may change
                _check_same(saved.get(key), now.get(key), marker, f"{where}.{key}".lstrip("."))
    elif saved != now:
        what = "the corpus" if where.startswith("corpus") else f"setting {where!r}"
        raise MinidmlError(f"--resume: {what} differs from {marker} ({saved!r} there, "
                           f"{now!r} now); use the same options and files, or another --out")


def _tokenizer(out: Path, files: list[Path], base: TrainConfig,
               say: Callable[[str], None]) -> Tokenizer:
    path = out / "tokenizer.model"
    if path.exists():
        return Tokenizer.load(path)
    say("training the shared tokenizer")
    tokenizer = Tokenizer.train(corpus_documents(files, base), base.vocab_size,
                                base.tokenizer_type, seed=base.seed)
    tokenizer.save(path)
    return tokenizer


def _read_summary(arm_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((arm_dir / "arm.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _train_one(name: str, run_dir: Path, files: list[Path], tokenizer: Path, cfg: TrainConfig,
               resume: bool, progress: bool, cache_dir: str | os.PathLike | None,
               say: Callable[[str], None]) -> tuple[Any, float]:
    """Train (or continue) one run; returns the loaded run and its training wall time
    (over every resumption)."""
    again = resume and (run_dir / "config.json").exists()
    say(f"{name}: {'continuing' if again else 'training'} {cfg.n_students} model(s), mode "
        f"{cfg.mode}")
    train(files, run_dir, cfg, resume=again, force=not again, progress=progress,
          cache_dir=cache_dir, tokenizer=tokenizer)
    logs = [r for r in read_metrics(run_dir / "metrics.jsonl") if r.get("event") == "train"]
    seconds = float(logs[-1].get("train_seconds", math.nan)) if logs else math.nan
    # what is evaluated is what was saved: the run as minidml eval would load it
    return load(run_dir, str(resolve_device(cfg.device))), seconds


def _run_arm(name: str, arm: str, changes: dict[str, Any], arm_dir: Path, files: list[Path],
             tokenizer: Path, config: CompareConfig, base: TrainConfig, shapes: list[Shape],
             teacher: Shape, resume: bool, progress: bool, data_dir: str | os.PathLike | None,
             cache_dir: str | os.PathLike | None, say: Callable[[str], None]) -> dict[str, Any]:
    """Train and evaluate arm ``name``: ``arm`` with the settings ``changes`` (a variant's;
    kd's teacher, shared by kd and its variants, keeps the base settings)."""
    seed_dir = arm_dir.parent
    label = f"[seed {seed_dir.name.removeprefix('seed-')}] {name}"
    wall = 0.0
    teacher_run = None
    common = dict(budget=None, teachers=())
    if arm == "kd":
        teacher_dir = seed_dir / TEACHER
        teacher_run = _read_summary(teacher_dir)
        if teacher_run is None:
            run, seconds = _train_one(f"{label} teacher", teacher_dir, files, tokenizer,
                                      base.replace(students=(teacher,), mode="single",
                                                   **common),
                                      resume, progress, cache_dir, say)
            teacher_run = _evaluate(run, TEACHER, config, data_dir, progress, seconds, say,
                                    f"{label} teacher")
            teacher_run["dir"] = f"{seed_dir.name}/{TEACHER}"
            _io.write_json(teacher_dir / "arm.json", teacher_run)
        cfg = base.replace(students=(shapes[0],), mode="kd", budget=None,
                           teachers=(str(teacher_dir),))
    elif arm == "single":
        cfg = base.replace(students=(shapes[0],), mode="single", **common)
    else:
        cfg = base.replace(students=tuple(shapes), mode=arm, **common)
    run, wall = _train_one(label, arm_dir, files, tokenizer, cfg.replace(**changes), resume,
                           progress, cache_dir, say)
    summary = _evaluate(run, name, config, data_dir, progress, wall, say, label)
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
    results = evaluate(run, config.suites, student="all", data_dir=data_dir,
                       limit=config.eval_limit, batch_size=config.eval_batch_size,
                       progress=progress)
    results.write(run.path / "eval.json")
    results.write_samples(run.path / paired.SAMPLES_FILE)  # for the per-example paired tests
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
                       "omega": float(run.omega[i]), "scores": _scores(doc, lb, config.suites)})
    if len(scfgs) > 1:
        models.append({"label": ENSEMBLE, "n_params": sum(c.n_params for c in scfgs),
                       "val_loss": (run.last_eval or {}).get("ensemble_val_loss", math.nan),
                       "champion": False, "scores": _scores(doc, ENSEMBLE, config.suites)})
    summary = {"arm": arm, "seed": cfg.seed, "run": str(run.path), "mode": cfg.mode,
               "steps": steps, "tokens_per_model": tokens,
               "alpha": cfg.alpha if cfg.mode != "single" else 0.0,
               "temperature": cfg.softmax_temperature, "models": models,
               "train_flops": sum(flops), **extra, "train_seconds": round(wall, 1),
               "eval_seconds": round(time.perf_counter() - t0, 1)}
    log_scores(run.path, {f"{suite}/{m['label']}": m["scores"][suite]["score"]
                          for m in models for suite in config.suites if suite in m["scores"]})
    say(f"{label}: done (" + ", ".join(
        f"{m['label']} {_fmt_scores(m['scores'], config.suites)}" for m in models) + ")")
    return summary


def _scores(doc: dict[str, Any], label: str, suites: Sequence[str]) -> dict[str, Any]:
    """Per suite, the macro score and its stderr for one model."""
    groups = doc["groups"].get(label, {})
    out = {}
    for name in suites:
        g = groups.get(name) or next((v for v in groups.values() if v.get("suite") == name),
                                     None)
        if g is not None:
            out[name] = {"score": g["score"], "stderr": g["score_stderr"],
                         "n_tasks": g["n_tasks"]}
    return out


def _fmt_scores(scores: dict[str, Any], suites: Sequence[str]) -> str:
    return " ".join(f"{s}={100 * scores[s]['score']:.1f}" for s in suites if s in scores)


# ----------------------------------------------------------------------------- report
def _report(config: CompareConfig, settings: dict[str, Any], tokenizer: Tokenizer,
            shapes: list, teacher: Any, arms: list[dict[str, Any]], entropy: float,
            out: Path) -> dict[str, Any]:
    base = config.train
    rows = _table(config, arms)
    return {
        "minidml_version": __version__, "date": _io.utc_now(), "out": str(out),
        "settings": settings, "suites": list(config.suites), "seeds": config.seeds,
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256},
        "unigram_entropy": entropy,
        "students": [c.to_dict() for c in shapes], "teacher": teacher.to_dict(),
        "context": base.context, "tokens_per_step": base.tokens_per_step,
        "arms": arms, "table": rows,
    }


def _table(config: CompareConfig, arms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The report's rows: per arm its champion (each seed's own, averaged), then each model."""
    rows = []
    for name, arm, _ in config.arm_specs():
        runs = [a for a in arms if a["arm"] == name]
        labels = [m["label"] for m in runs[0]["models"]]
        if arm == "kd":
            labels.append(TEACHER)
        champions = [next(m for m in a["models"] if m["champion"]) for a in runs]
        names = sorted({m["label"] for m in champions})
        title = names[0] if len(names) == 1 else "champion (" + ", ".join(
            f"{n} ×{sum(m['label'] == n for m in champions)}" for n in names) + ")"
        rows.append(_aggregate(name, title, champions, runs, config.suites) | {
            "champion_row": True, "champion": True})
        for lb in labels:
            per_seed = [_model(a, lb) for a in runs]
            rows.append(_aggregate(name, lb, per_seed, runs, config.suites))
    return rows


def _model(arm: dict[str, Any], label: str) -> dict[str, Any]:
    if label == TEACHER:
        return arm["teacher"]["models"][0]
    return next(m for m in arm["models"] if m["label"] == label)


def _aggregate(arm: str, label: str, per_seed: list[dict[str, Any]],
               runs: list[dict[str, Any]], suites: Sequence[str]) -> dict[str, Any]:
    """One row of the table: means over seeds; stderr of one seed, or the spread of several."""
    row: dict[str, Any] = {"arm": arm, "model": label, "n_params": per_seed[0]["n_params"],
                           "champion": all(m["champion"] for m in per_seed)
                           if label != TEACHER else False,
                           "champions": sum(m["champion"] for m in per_seed),
                           "val_loss": _mean([m["val_loss"] for m in per_seed])}
    if len(per_seed) > 1:
        row["val_loss_sd"] = statistics.stdev([m["val_loss"] for m in per_seed])
    for s in suites:
        got = [m["scores"][s] for m in per_seed if s in m["scores"]]
        if not got:
            continue
        cell = {"score": _mean([g["score"] for g in got]),
                "stderr": _mean([g["stderr"] for g in got])}
        if len(got) > 1:
            cell["seed_sd"] = statistics.stdev([g["score"] for g in got])
        row[s] = cell
    if label == TEACHER:
        row["train_flops"] = _mean([r["teacher"]["train_flops"] for r in runs])
        row["train_seconds"] = _mean([r["teacher"]["train_seconds"] for r in runs])
    else:
        extra = [r.get("teacher_forward_flops", 0) + r.get("outer_flops_estimate", 0)
                 + (r["teacher"]["train_flops"] if "teacher" in r else 0) for r in runs]
        row["arm_flops"] = _mean([r["train_flops"] + e for r, e in zip(runs, extra,
                                                                         strict=True)])
        row["arm_seconds"] = _mean([r["train_seconds"] + (r["teacher"]["train_seconds"]
                                                          if "teacher" in r else 0)
                                    for r in runs])
    return row


def _mean(values: list[float]) -> float:
    return statistics.fmean(values) if values else math.nan


def format_report(report: dict[str, Any]) -> str:
    """``report.md``: what was compared, then the champions' table and every model's."""
    suites = report["suites"]
    st = report["settings"]["compare"]
    tr = st["train"]
    words = ", ".join(Path(f).name for f in report["corpus"]["files"])
    arms = {a["arm"]: a for a in report["arms"] if a["seed"] == tr["seed"]}
    any_arm = next(iter(arms.values()))
    lines = [
        "# minidml compare", "",
        f"- corpus: {words} ({report['corpus']['tokens']:,} tokens)",
        f"- tokenizer: {tr['tokenizer_type']}, {report['tokenizer']['vocab_size']} pieces; "
        f"unigram entropy of the corpus {report['unigram_entropy']:.3f} nats/token",
        f"- budget N = {format_count(st['budget'])}, K = {st['students']} students: "
        + "; ".join(f"{c['n_layers']}×{c['d_model']} ({c['n_params'] / 1e6:.2f}M)"
                    for c in report["students"])
        + f"; kd teacher {report['teacher']['n_layers']}×{report['teacher']['d_model']} "
          f"({report['teacher']['n_params'] / 1e6:.2f}M)",
        f"- every model: {any_arm['tokens_per_model']:,} training tokens "
        f"({any_arm['steps']} steps of {report['tokens_per_step']:,}), context "
        f"{report['context']}, lr {tr['lr']}, seeds {report['seeds']}",
        f"- kd: α = {arms['kd']['alpha']}, T = {arms['kd']['temperature']}" if "kd" in arms
        else "- kd: not run",
        f"- dml/wml: α = {tr['alpha']}, T = {tr['temperature'] or 1.0}; wml: hypergradient "
        f"{tr['hypergrad']}, ω updated every {tr['outer_every']} steps (β = {tr['outer_lr']})",
        f"- suites: {', '.join(suites)}"
        + (f" (at most {st['eval_limit']} examples per task)" if st["eval_limit"] else ""),
        "",
        "Scores are accuracies in percent, each suite's unweighted mean over its tasks, ± its "
        "standard error" + (" (± the spread over seeds after it)" if report["seeds"] > 1
                            else "") + ". The champion (★) of an arm is its student with the "
        "lowest validation loss. FLOPs count training (forward + backward) of every model an "
        "arm needs: kd includes training its teacher and the teacher's forward passes, wml "
        "an estimate of its outer steps.", "",
        "## Champions", "",
    ]
    head = ["arm", "model", "params", "val loss", *suites, "arm FLOPs", "arm time"]
    lines += _io.md_table(head, [_md_row(r, suites) for r in report["table"]
                              if r.get("champion_row")])
    lines += ["", "## Every model", ""]
    lines += _io.md_table(head[:-2], [_md_row(r, suites)[:-2] for r in report["table"]
                                   if not r.get("champion_row")])
    if st.get("variants"):
        lines += ["", "## Variants", "",
                  "Each variant is its arm with one setting changed; Δ is the variant minus "
                  "its arm (negative losses and positive scores are better).", ""]
        lines += _io.md_table(["variant", "champion val loss", "ensemble val loss", *suites],
                           _variant_rows(report))
    lines += paired.format_tables(report)
    wml = [a for a in report["arms"] if a.get("base_arm", a["arm"]) == "wml"]
    if wml:
        lines += ["", "## Learned peer weights ω", ""]
        for a in wml:
            lines.append(f"- {a['arm']}, seed {a['seed']}: " + ", ".join(
                f"{m['label']} {m['omega']:.3f}" for m in a["models"] if "omega" in m))
    return "\n".join(lines) + "\n"


def champion_and_ensemble_rows(report: dict[str, Any]
                               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The report's table rows of each arm's champion, and of each arm's ensemble (arms of
    several students only), by arm name."""
    champion = {r["arm"]: r for r in report["table"] if r.get("champion_row")}
    ensemble = {r["arm"]: r for r in report["table"] if r["model"] == ENSEMBLE}
    return champion, ensemble


def _variant_rows(report: dict[str, Any]) -> list[list[str]]:
    """Per variant: its champion's and ensemble's validation loss and its champion's scores,
    each with the difference from its arm."""
    suites = report["suites"]
    champion, ensemble = champion_and_ensemble_rows(report)

    def cell(value: float, ref: float, scale: float = 1.0, digits: int = 3) -> str:
        return f"{scale * value:.{digits}f} (Δ {scale * (value - ref):+.{digits}f})"

    rows = []
    for v in report["settings"]["compare"]["variants"]:
        name = Variant(**v).name
        ours, ref = champion[name], champion[v["arm"]]
        row = [name, cell(ours["val_loss"], ref["val_loss"])]
        if name in ensemble:
            row.append(cell(ensemble[name]["val_loss"], ensemble[v["arm"]]["val_loss"]))
        else:
            row.append("-")
        for suite in suites:
            if suite in ours and suite in ref:
                row.append(cell(ours[suite]["score"], ref[suite]["score"], 100, 1))
            else:
                row.append("-")
        rows.append(row)
    return rows


def _md_row(row: dict[str, Any], suites: Sequence[str]) -> list[str]:
    name = row["model"] + (" ★" if row["champion"] and "×" not in row["model"] else "")
    cells = [row["arm"], name, f"{row['n_params'] / 1e6:.2f}M", f"{row['val_loss']:.3f}"]
    for s in suites:
        c = row.get(s)
        if c is None:
            cells.append("-")
            continue
        text = f"{100 * c['score']:.1f} ± {100 * c['stderr']:.1f}"
        if "seed_sd" in c:
            text += f" (± {100 * c['seed_sd']:.1f})"
        cells.append(text)
    flops = row.get("arm_flops", row.get("train_flops", math.nan))
    secs = row.get("arm_seconds", row.get("train_seconds", math.nan))
    cells += [_flops(flops), f"{secs / 60:.1f} min"]
    return cells


def _flops(n: float) -> str:
    """``3.1e15`` as ``3.1 PFLOP``."""
    if not math.isfinite(n):
        return "-"
    for scale, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP")):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.3g} FLOP"


__all__ = ["ARMS", "VARIABLE", "CompareConfig", "Variant", "compare", "format_report"]
