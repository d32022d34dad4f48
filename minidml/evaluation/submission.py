"""BabyLM 2026 submissions: minidml's predictions in the official results layout, and the
leaderboard's collated file made from them.

**Layout.** The official pipeline files a model's outputs under ``RESULTS/<model>/<revision>/``:
``zero_shot/causal/<task>/<data set>/predictions.json`` for a zero-shot task (reading's in
``zero_shot/causal/reading/``), ``finetune/<task>/predictions.json`` for fine-tuning and
``zero_shot/causal/AoA_word/surprisal.json`` for age of acquisition. ``<model>`` is the stem of
the model's path or Hub name (as the official scripts take it), ``<revision>`` ``main`` (the
final model) or a checkpoint's revision (``chck_1M``, …). The fast sets go where the official
fast scripts put them: ``blimp/blimp_fast``, ``blimp/supplement_fast``, ``ewok/ewok_fast``,
``entity_tracking/entity_tracking_fast``, and the wug and reading sets in the same folders as
the full ones (their files are the same).

**Predictions** (:func:`predictions`), one list per subtask (a BLiMP paradigm, an EWoK
domain, an entity-tracking ``<file>_<n>_ops``, …), in the data's order, each item ``{"id":
"<subtask>_<k>", "pred": …}``: ``pred`` is the completion the model ranks first (the first of
equal scores, as ``torch.max`` takes it, so the official accuracy is minidml's): the sentence
itself for BLiMP, the supplement and the wug tests, ``" " + target`` for EWoK, the option for
entity tracking, and the whole sentence (``prefix + " " + property``) for COMPS. The wug tests
add ``prob``, the float32 softmax's probability of the first sentence. Reading has one item
per row of its table, ``{"id": row, "pred": surprisal, "prev_pred": the previous word's (NaN
where there is none)}``, in nats, scored by the official rule: the reading suite's rows
(:attr:`~minidml.evaluation.suite.SuiteResult.rows`), which it also scores back
(:class:`~minidml.evaluation.suite.ScoresRows`). Age of acquisition (the ``aoa`` suite, which
scores every revision of the run itself) goes to ``main`` only, as the official ``run.py``
writes ``surprisal.json``: ``metadata`` and one result per revision, word and context, ``{"step":
"chck_1M", "word_count", "target_word", "context_id", "context", "surprisal"}`` (nats), its
JSON indented as the official file. Fine-tuning (``glue`` with ``glue_set
2026`` and none of its recipe changed) goes to ``finetune/<task>/predictions.json``, each
validation example ``{"id": "<task>_<k>", "pred": class}``, from the best epoch's model as
the official trainer predicts; boolq has no public training file and is not written.

**Collation** (:func:`collate`): the file the leaderboard reads,
``RESULTS/<model>/all_full_preds_and_fast_scores_causal.json``, as the official
``collate_preds.py`` writes it: the final model's predictions of every task (BLiMP, the
supplement, EWoK, entity tracking, both wug tests, COMPS, reading, AoA and the seven
fine-tuning tasks merged under ``glue``), and with ``fast`` the fast sets' scores of every
revision of the track (per subtask accuracy, the wug tests' Spearman ρ, reading's ``spr`` and
``rt``). A file is refused with one line naming it when it is missing or holds another number
of items than the data it answers (a subtask missing or unknown too, which the official script
lets through or fails on with a traceback); the counts come from the data under the data root,
except for the sets with no public copy (:data:`UNPUBLISHED`, and the AoA file's
:data:`AOA_WORDS`, where its word file is not there). :class:`Collation` also holds the scores
the official ``calculate_results_from_pred.py`` prints, for the tasks whose data is here (AoA's
curve fitness with the official ``cdi_human.csv``, scored by the ``aoa`` suite).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch

from .. import _io
from ..errors import MinidmlError
from .suite import (
    ENSEMBLE,
    ScoresRows,
    as_choices,
    chosen,
    read_json,
    read_jsonl,
    resolve_data_dir,
    spearman,
)

BACKEND = "causal"  # the official backend of a causal LM: part of every path
COLLATED = f"all_full_preds_and_fast_scores_{BACKEND}.json"
MAIN = "main"
PROTOCOL = "babylm-2026"  # the rule the official pipeline scores by
# the official --track choices (the multimodal track's vision tasks are not minidml's) and the
# revisions whose fast sets each collates: the checkpoints a run of that track makes
TRACKS = {"strict-small": "strict-small", "strict": "strict", "interaction": "strict"}
GLUE_TASKS = ("boolq", "mnli", "mrpc", "multirc", "qqp", "rte", "wsc")
GLUE = "glue"  # the suite that fine-tunes them
FINETUNE_SET = "2026"  # its glue_set that is the official pipeline's fine-tuning
# the number of items of the sets that have no public copy (the official collation's counts);
# where the data is under the data root, its rows are counted instead
UNPUBLISHED: dict[str, int | dict[str, int]] = {
    "wug-past": 50, "wug-past-fast": 50,
    "comps": {"base": 49_340, "wugs_dist_before": 13_896, "wugs_dist_in_between": 13_896,
              "wugs": 13_896},
    "entity-tracking-fast": {"regular_0_ops": 606, "regular_1_ops": 607, "regular_2_ops": 606,
                             "regular_3_ops": 606, "regular_4_ops": 568, "regular_5_ops": 159},
}
AOA = "aoa"  # the suite that writes AoA_word/surprisal.json
# the official AoA file's results per revision (one per word and context), where its word file
# (cdi_childes.json, no public copy) is not under the data root to count them
AOA_WORDS = 8005


@dataclass(frozen=True)
class Target:
    """Where a minidml suite's predictions go, and how the official scripts read them: ``key``
    in the collated file, the official ``task`` and ``dataset`` folders (reading has none),
    and ``answer``, what a prediction is compared with (``sentence_good``, ``Target1``,
    ``option``, ``comps``, ``wug``, ``reading``)."""

    suite: str
    key: str
    task: str
    dataset: str | None
    answer: str

    @property
    def fast(self) -> bool:
        return self.suite.endswith("-fast")

    @property
    def label(self) -> str:
        """The task's name in the official report."""
        return {"blimp": "BLIMP", "blimp_supplement": "SUPPLEMENT", "ewok": "EWOK",
                "entity_tracking": "ENTITY TRACKING", "wug_adj": "WUG ADJ",
                "wug_past": "WUG PAST", "comps": "COMPS", "reading": "READING"}[self.key]

    def folder(self, results: str | os.PathLike, model: str, revision: str) -> Path:
        base = Path(results) / model / revision / "zero_shot" / BACKEND / self.task
        return base / self.dataset if self.dataset else base

    def path(self, results: str | os.PathLike, model: str, revision: str) -> Path:
        return self.folder(results, model, revision) / "predictions.json"


_TARGETS = (
    Target("blimp", "blimp", "blimp", "blimp_filtered", "sentence_good"),
    Target("blimp-supplement", "blimp_supplement", "blimp", "supplement_filtered",
           "sentence_good"),
    Target("ewok", "ewok", "ewok", "ewok_filtered", "Target1"),
    Target("entity-tracking", "entity_tracking", "entity_tracking", "entity_tracking", "option"),
    Target("wug-adj", "wug_adj", "wug_adj", "wug_adj_nominalization", "wug"),
    Target("wug-past", "wug_past", "wug_past", "wug_past_tense", "wug"),
    Target("comps", "comps", "comps", "comps", "comps"),
    Target("reading", "reading", "reading", None, "reading"),
    Target("blimp-fast", "blimp", "blimp", "blimp_fast", "sentence_good"),
    Target("supplement-fast", "blimp_supplement", "blimp", "supplement_fast", "sentence_good"),
    Target("ewok-fast", "ewok", "ewok", "ewok_fast", "Target1"),
    Target("entity-tracking-fast", "entity_tracking", "entity_tracking", "entity_tracking_fast",
           "option"),
    Target("wug-adj-fast", "wug_adj", "wug_adj", "wug_adj_nominalization", "wug"),
    Target("wug-past-fast", "wug_past", "wug_past", "wug_past_tense", "wug"),
    Target("reading-fast", "reading", "reading", None, "reading"),
)
TARGETS: dict[str, Target] = {t.suite: t for t in _TARGETS}
FULL = tuple(t for t in _TARGETS if not t.fast)  # the collated file's order
FAST = tuple(t for t in _TARGETS if t.fast)
# the named sets of suites (minidml.evaluation.runner.GROUPS) that hold tasks written here
SUITE_SETS = ("all", "babylm-2026", "babylm-fast")


# ----------------------------------------------------------------------------- names
def model_name(name: str | os.PathLike, option: str = "--model") -> str:
    """The folder the official scripts file a model under: the stem of its path or Hub name
    (``user/my-model`` → ``my-model``)."""
    stem = Path(name).stem
    if not stem or stem in (".", ".."):
        raise MinidmlError(f"{option} {name}: no model name in it; give the model's name or "
                           "path, whose last part names its folder of results")
    return stem


def revision_plan(path: Path, steps: Sequence[int | None], *, hf: bool = False,
                  every: bool = False) -> tuple[str, list[list[str]]]:
    """(the model's name, for each step to evaluate the revisions its predictions are filed
    under). The latest checkpoint (step None) is ``main``; a step the checkpoint of which is
    published as revisions (its ``words.json``: ``chck_1M``, …) is filed under them, and a step
    without any is an error, unless ``every`` (``--step all``), which skips it (the newest
    checkpoint is ``main`` then, besides its own revisions). A Hugging Face directory of
    ``minidml export --revisions`` (a ``revisions.json`` beside it) is its own revision of the
    model named by the folder above it; any other is ``main`` of the model it is."""
    from ..rundir import checkpoint_of, revisions

    resolved = path.resolve()
    if hf:
        index = resolved.parent / "revisions.json"
        try:
            listed = json.loads(index.read_text(encoding="utf-8")).get("revisions", {})
        except (OSError, ValueError, AttributeError):
            listed = {}
        if isinstance(listed, dict) and resolved.name in listed:
            return model_name(resolved.parent.name, "RUN_DIR"), [[resolved.name]]
        return model_name(resolved.name, "RUN_DIR"), [[MAIN]]
    name = model_name(resolved.name, "RUN_DIR")
    plan: list[list[str]] = []
    for k, step in enumerate(steps):
        if step is None:
            plan.append([MAIN])
            continue
        ckpt = checkpoint_of(path, step)
        names = revisions(ckpt)
        if every and k == len(steps) - 1:
            names = [*names, MAIN]
        if not names and not every:
            raise MinidmlError(
                f"--step {step}: {ckpt.name} is no revision of the submission (its words.json "
                "names none; the revisions are the checkpoints at words seen, chck_1M, …, made "
                "by --track or --checkpoint-words); --babylm-results files it under none: "
                "evaluate such a checkpoint, or the final model without --step (main)")
        plan.append(names)
    return name, plan


def check_request(suite_names: Sequence[str], protocol: str,
                  options: Mapping[str, Any] | None = None) -> None:
    """Before any work: the official pipeline scores by ``babylm-2026``, at least one of the
    suites asked for must be a task the official collation reads, and ``glue`` must fine-tune
    by the official recipe (``glue_set 2026``, nothing changed)."""
    if protocol != PROTOCOL:
        raise MinidmlError(f"--babylm-results: the official pipeline scores by --protocol "
                           f"{PROTOCOL}, not {protocol}; drop --protocol {protocol}")
    if not any(n in TARGETS or n in SUITE_SETS or n in (GLUE, AOA) for n in suite_names):
        raise MinidmlError(
            f"--babylm-results: none of the suites ({', '.join(suite_names)}) is a task of the "
            f"official collation; add --suite babylm-2026 (the final model's) or --suite "
            f"babylm-fast (a checkpoint's), or one of {', '.join([*TARGETS, GLUE, AOA])}")
    if GLUE in suite_names:
        options = dict(options or {})
        if str(options.get("glue_set")) != FINETUNE_SET:
            raise MinidmlError(f"--babylm-results: the official fine-tuning is --glue-set "
                               f"{FINETUNE_SET}'s; add --glue-set {FINETUNE_SET}")
        changed = sorted(k for k, v in options.items()
                         if v is not None and k not in ("glue_set", "tasks"))
        if changed:
            raise MinidmlError(f"--babylm-results: the official fine-tuning runs its own "
                               f"recipe; drop the glue option {changed[0]}")


def submitted_label(student: str, run: Any) -> str:
    """The one model whose predictions are written: ``--student`` must name one student (an
    index or ``champion``; a one-student run's ``all`` is its student)."""
    from .runner import labels_for

    labels = labels_for(student, len(run.students), getattr(run, "champion", 0))
    if len(labels) != 1 or labels[0] == ENSEMBLE:
        raise MinidmlError(
            f"--student {student}: --babylm-results writes one model's predictions, and "
            "the ensemble is no model you can upload; pass --student with the index you "
            "export (or champion)")
    return labels[0]


# ----------------------------------------------------------------------------- predictions
def predictions(target: Target, samples: Sequence[Any], label: str) -> dict[str, Any]:
    """The official ``predictions.json`` of a zero-shot task from a suite's scored samples
    (:class:`~minidml.evaluation.suite.Sample`, in task order) for model ``label``."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    by_task: dict[str, list[Any]] = {}
    for s in samples:
        by_task.setdefault(s.task, []).append(s)
    for task, items in by_task.items():
        items = sorted(items, key=lambda s: s.index)
        rows = []
        probs: list[float] = []
        if target.answer == "wug":  # float32, the pairs softmaxed together as the suite does
            pairs = torch.tensor([s.scores[label] for s in items], dtype=torch.float32)
            probs = torch.softmax(pairs, dim=1)[:, 0].tolist()
        for k, s in enumerate(items):
            c = as_choices(s.pair)
            best = chosen(s.scores[label])
            context = c.contexts[best] if c.contexts else ""
            if target.answer == "comps":  # the whole sentence
                pred = context + c.join + c.texts[best]
            else:  # the completion: what follows the context
                pred = c.join + c.texts[best] if context else c.texts[best]
            row: dict[str, Any] = {"id": f"{task}_{k}", "pred": pred}
            if target.answer == "wug":
                row["prob"] = probs[k]
            rows.append(row)
        out[task] = {"predictions": rows}
    return out


def row_predictions(rows: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """The official reading ``predictions.json`` from a suite's rows for one model: each row's
    surprisal and its previous word's (NaN where it has none, as the official code writes it)."""
    return {"reading": {"predictions": [
        {"id": i, "pred": float(p), "prev_pred": float(q)}
        for i, (p, q) in enumerate(zip(rows["pred"], rows["prev_pred"], strict=True))]}}


def finetune_predictions(task: str, predicted: Sequence[int]) -> dict[str, Any]:
    """The official fine-tuning ``predictions.json`` of a task: each validation example's
    predicted class."""
    return {task: {"predictions": [{"id": f"{task}_{i}", "pred": int(p)}
                                   for i, p in enumerate(predicted)]}}


def finetune_path(results: str | os.PathLike, model: str, revision: str, task: str) -> Path:
    """Where the official pipeline files a task's fine-tuning predictions."""
    return Path(results) / model / revision / "finetune" / task / "predictions.json"


def aoa_path(results: str | os.PathLike, model: str, revision: str = MAIN) -> Path:
    """Where the official AoA run files its surprisals (always under ``main``)."""
    base = Path(results) / model / revision / "zero_shot" / BACKEND
    return base / "AoA_word" / "surprisal.json"


def _aoa_suite() -> Any:
    """The ``aoa`` suite, which reads and writes the official AoA file (``row_count``,
    ``human_file``, ``surprisal_file``, ``score_file``); None when no plugin registers it."""
    from .plugins import suites

    spec = suites().get(AOA)
    return None if spec is None else spec.factory()


def _not_official_finetuning(settings: Mapping[str, Any]) -> str | None:
    """Why ``glue`` results are not the official fine-tuning's (None: they are)."""
    if settings.get("glue_set") != FINETUNE_SET:
        return (f"fine-tuned by glue_set {settings.get('glue_set')}; the official "
                f"fine-tuning is --glue-set {FINETUNE_SET}'s")
    if settings.get("overrides"):
        return (f"fine-tuned with {', '.join(settings['overrides'])} changed from the official "
                "recipe; drop those glue options")
    return None


@dataclass
class Written:
    """What :func:`write_predictions` wrote: the files, and the suites it left out (why)."""

    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def write_predictions(results: Any, out: str | os.PathLike, revisions: Sequence[str], *,
                      model: str, label: str, data_dir: str | os.PathLike | None = None
                      ) -> Written:
    """Write the predictions of every completed suite of ``results``
    (:class:`~minidml.evaluation.runner.EvalResults`) that the official collation reads,
    for model ``label``, under ``out/<model>/<revision>/`` for each revision; an existing file
    is replaced. Every file is made before the first is written (two suites filed in one place,
    a wug or reading set and its fast copy, must agree), each written atomically. The AoA file
    goes under ``main`` only (none when ``main`` is not among ``revisions``), its words and
    contexts read again from the data root the suite scored (``data_dir``, the default root
    when None), which must not have changed since."""
    if results.protocol != PROTOCOL:
        raise MinidmlError(f"--babylm-results: these results were scored by --protocol "
                           f"{results.protocol}; the official pipeline's is {PROTOCOL}")
    done = Written()
    content: dict[Path, tuple[str, bytes]] = {}

    def put(name: str, data: Any, paths: Sequence[Path], indent: int | None = None) -> None:
        text = json.dumps(data, indent=indent).encode("ascii")
        for path in paths:
            if path in content and content[path][1] != text:
                raise MinidmlError(
                    f"--babylm-results: {content[path][0]} and {name} both go to {path} but "
                    "differ; evaluate them apart (the fast sets on checkpoints, the full sets "
                    "on the final model)")
            content[path] = (name, text)

    for outcome in results.outcomes:
        name = outcome.spec.name
        if name not in TARGETS and name not in (GLUE, AOA):
            done.skipped[name] = "not a task of the official collation"
            continue
        if outcome.status != "ok" or outcome.result is None:
            done.skipped[name] = outcome.status
            continue
        if name == AOA:
            if MAIN not in revisions:
                done.skipped[name] = ("it spans every revision and is filed under main: "
                                      "evaluate the final model (no --step)")
                continue
            put(name, _aoa_file(outcome, label, model, data_dir), [aoa_path(out, model)],
                indent=2)  # the official run.py indents its JSON
            continue
        if name == GLUE:
            why = _not_official_finetuning(outcome.result.settings)
            if why:
                done.skipped[name] = why
                continue
            predicted = outcome.result.rows.get(label, {})
            for task in GLUE_TASKS:
                if task not in predicted:
                    done.skipped[f"{name}/{task}"] = "not fine-tuned (see the suite's notes)"
                    continue
                put(name, finetune_predictions(task, predicted[task]),
                    [finetune_path(out, model, revision, task) for revision in revisions])
            continue
        target = TARGETS[name]
        if target.answer == "reading":
            data = row_predictions(outcome.result.rows[label])
        else:
            data = predictions(target, outcome.result.samples, label)
        put(name, data, [target.path(out, model, revision) for revision in revisions])
    for path, (_, text) in content.items():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _io.write_bytes(path, text)
        except OSError as e:
            raise MinidmlError(f"--babylm-results {out}: cannot write {path} "
                               f"({e.strerror or e}); choose a writable folder") from None
        done.files.append(path)
    return done


def _aoa_file(outcome: Any, label: str, model: str, data_dir: str | os.PathLike | None
              ) -> dict[str, Any]:
    """The official ``surprisal.json`` of model ``label`` from the ``aoa`` suite's outcome."""
    from .runner import data_checksum

    suite = _aoa_suite()
    if suite is None:
        raise MinidmlError("--babylm-results: no plugin registers the aoa suite to write the "
                           "AoA file with")
    root = resolve_data_dir(data_dir)
    spec = outcome.spec
    if data_checksum(root, spec.requires) != outcome.data_sha256:
        raise MinidmlError(f"--babylm-results: {root / spec.requires[0]} is not the file the "
                           "AoA surprisals were scored on (it changed, or --data-dir names "
                           "another root); evaluate again")
    return suite.surprisal_file(outcome.result.rows[label], outcome.result.settings, root,
                                model)


# ----------------------------------------------------------------------------- the data
@dataclass
class _Answers:
    """What a task's predictions are checked and scored against: per subtask the correct
    text of every item (or the wug test's human ratios, the same for every subtask), or the
    suite that scores its rows itself (:class:`~minidml.evaluation.suite.ScoresRows`, reading)
    with its data root; ``sizes`` the items per subtask (lower-cased, as the official check
    looks them up)."""

    per_subtask: dict[str, list[Any]] | None = None
    ratios: list[float] | None = None
    rows: tuple[ScoresRows, Path] | None = None
    sizes: dict[str, int] | int = 0


def _data_path(suite: str, root: Path) -> Path:
    from .plugins import suites

    return root / suites()[suite].requires[0]


def _folder(suite: str, root: Path) -> Path:
    """The folder of a suite's data files."""
    path = _data_path(suite, root)
    return path if not path.suffix else path.parent


def _load_answers(target: Target, root: Path) -> _Answers | None:
    """The answers of a task from its data under ``root`` (None: the data is not there)."""
    folder = _folder(target.suite, root)
    if target.answer == "reading":
        from .plugins import suites

        suite = suites()[target.suite].factory()
        n = suite.row_count(root)
        return None if n is None else _Answers(rows=(suite, root), sizes=n)
    if target.answer == "wug":
        path = folder / f"{target.dataset}.jsonl"
        if not path.is_file():
            return None
        ratios = [float(r["ratio"]) for r in read_jsonl(path, ("ratio",))]
        return _Answers(ratios=ratios, sizes=len(ratios))
    per: dict[str, list[Any]] = {}
    if target.answer == "option":
        # the fast set has the regular file only, and the official script reads only it
        files = ([folder / "regular.jsonl"] if target.fast else sorted(folder.glob("*.jsonl")))
        if not all(f.is_file() for f in files) or not files:
            return None
        for f in files:
            for row in read_jsonl(f, {"options": list, "numops": int}):
                per.setdefault(f"{f.stem}_{row['numops']}_ops", []).append(row["options"][0])
    elif target.answer == "comps":
        stems = {"base": "comps_base", "wugs": "comps_wugs",
                 "wugs_dist_before": "comps_wugs_dist-before",
                 "wugs_dist_in_between": "comps_wugs_dist-in-between"}
        if not all((folder / f"{s}.jsonl").is_file() for s in stems.values()):
            return None
        for sub, stem in stems.items():
            per[sub] = [f"{r['prefix_acceptable']} {r['property_phrase']}" for r in read_jsonl(
                folder / f"{stem}.jsonl", ("prefix_acceptable", "property_phrase"))]
    else:
        files = sorted(folder.glob("*.jsonl"))
        if not files:
            return None
        for f in files:
            per[f.stem] = [r[target.answer] for r in read_jsonl(f, (target.answer,))]
    # texts stripped, as the official scripts compare them
    per = {k: [a.strip() if isinstance(a, str) else a for a in v] for k, v in per.items()}
    return _Answers(per_subtask=per, sizes={k.lower(): len(v) for k, v in per.items()})


def _answers(target: Target, root: Path, cache: dict[str, _Answers | None]) -> _Answers | None:
    if target.suite not in cache:
        cache[target.suite] = _load_answers(target, root)
    return cache[target.suite]


def expected_sizes(suite: str, data_dir: str | os.PathLike | None = None
                   ) -> dict[str, int] | int:
    """The number of predictions the official collation wants of a suite's task: per subtask
    (lower-cased), or one number for every subtask (the wug tests, reading)."""
    return _expected_sizes(TARGETS[suite], resolve_data_dir(data_dir), {})


def _expected_sizes(target: Target, root: Path, cache: dict[str, _Answers | None]
                    ) -> dict[str, int] | int:
    """The number of items of each subtask (or of every subtask, an int): the data's, else
    the official count of a set with no public copy; a missing data set is an error."""
    found = _answers(target, root, cache)
    if found is not None:
        return found.sizes
    if target.suite in UNPUBLISHED:
        return UNPUBLISHED[target.suite]
    raise MinidmlError(f"--data-dir {root}: no data of {target.suite} "
                       f"({_data_path(target.suite, root)}) to check "
                       f"{target.task}/{target.dataset or ''} against; pass --data-dir (the "
                       "data the predictions were made on)")


# ----------------------------------------------------------------------------- reading back
def _load(path: Path) -> Any:
    return read_json(path, "write it again")


def _check_predictions(path: Path, data: Any, sizes: Mapping[str, int] | int,
                       fields: Sequence[str] = ("pred",)) -> None:
    """``data`` is ``{subtask: {"predictions": [...]}}`` with the expected number of items per
    subtask and every subtask of the data, each item with ``fields`` (numbers where
    :data:`NUMBERS` says so): else a one-line error naming the file."""
    fix = "evaluate the task again (without --limit) with --babylm-results"
    need = set(fields)
    if not isinstance(data, dict) or not data:
        raise MinidmlError(f"{path}: expected {{subtask: {{\"predictions\": [...]}}}}; {fix}")
    for key, value in data.items():
        items = value.get("predictions") if isinstance(value, dict) else None
        if not isinstance(items, list):
            raise MinidmlError(f"{path}: subtask {key!r} has no list of predictions; {fix}")
        if isinstance(sizes, int):
            want = sizes
        else:
            found = sizes.get(str(key).lower())
            if found is None:
                raise MinidmlError(f"{path}: unknown subtask {key!r} (the data has "
                                   f"{', '.join(sorted(sizes))}); {fix}")
            want = found
        if len(items) != want:
            raise MinidmlError(f"{path}: subtask {key!r} has {len(items):,} predictions, the "
                               f"official collation expects {want:,}; {fix}")
        if not all(isinstance(item, dict) and item.keys() >= need for item in items):
            k = next(k for k, item in enumerate(items)
                     if not isinstance(item, dict) or not item.keys() >= need)
            raise MinidmlError(f"{path}: prediction {k} of {key!r} lacks "
                               f"{' or '.join(fields)}; {fix}")
        numbers = NUMBERS.get(tuple(fields), ())
        for k, item in enumerate(items):
            bad = next((f for f in numbers if isinstance(item[f], bool)
                        or not isinstance(item[f], int | float)), None)
            if bad is not None:
                raise MinidmlError(f"{path}: prediction {k} of {key!r} has {bad} "
                                   f"{json.dumps(item[bad])}, not a number; {fix}")
    if set(fields) == {"pred", "prev_pred"} and "reading" not in data:
        raise MinidmlError(f"{path}: no subtask 'reading', which the official scripts read; "
                           f"{fix}")
    if not isinstance(sizes, int):
        lacking = sorted(set(sizes) - {str(k).lower() for k in data})
        if lacking:
            raise MinidmlError(f"{path}: no predictions of subtask {lacking[0]!r}"
                               + (f" (and {len(lacking) - 1} more)" if len(lacking) > 1 else "")
                               + f"; {fix}")


# the fields of an item that are numbers (the scores read them as such), by its fields
NUMBERS: dict[tuple[str, ...], tuple[str, ...]] = {
    ("pred", "prob"): ("prob",), ("pred", "prev_pred"): ("pred", "prev_pred")}


def _fields(target: Target) -> tuple[str, ...]:
    return {"wug": ("pred", "prob"), "reading": ("pred", "prev_pred")}.get(target.answer,
                                                                          ("pred",))


def _same(pred: Any, answer: Any) -> bool:
    """A prediction matches its (stripped) answer as the official scripts compare them."""
    return (pred.strip() if isinstance(pred, str) else pred) == answer


def _number(x: Any) -> float:
    return math.nan if x is None else float(x)


def task_scores(target: Target, data: Mapping[str, Any], answers: _Answers
                ) -> dict[str, float]:
    """The official fast scores of one task's predictions: per subtask the share of items
    whose prediction is the correct text, the wug test's Spearman ρ per subtask, or reading's
    ``spr`` and ``rt`` (the gains in R² of self-paced reading and eye tracking)."""
    if target.answer == "reading":  # the reading suite's own fits of the two scored measures
        # a reading task's answers are its suite's rows (_load_answers)
        suite, root = cast("tuple[ScoresRows, Path]", answers.rows)
        items = data["reading"]["predictions"]
        scores = suite.score_rows({c: [_number(i[c]) for i in items]
                                   for c in ("pred", "prev_pred")}, root)
        return {"spr": scores["self_paced_reading"], "rt": scores["eye_tracking"]}
    # a wug test's answers are its human ratios, any other task's the texts per subtask
    # (_load_answers)
    ratios = cast("list[float]", answers.ratios)
    per_subtask = cast("dict[str, list[Any]]", answers.per_subtask)
    out = {}
    for key, value in data.items():
        items = value["predictions"]
        if target.answer == "wug":
            n = min(len(items), len(ratios))
            out[key] = spearman([float(i["prob"]) for i in items[:n]], ratios[:n])
            continue
        truth = per_subtask.get(key)
        if truth is None:  # the official check looks subtasks up whatever their case
            lower = {k.lower(): v for k, v in per_subtask.items()}
            truth = lower.get(str(key).lower(), [])
        pairs = list(zip(items, truth, strict=False))
        out[key] = (sum(_same(i["pred"], t) for i, t in pairs) / len(pairs)) if pairs \
            else math.nan
    return out


def _glue_score(merged: Mapping[str, Any], root: Path) -> float | None:
    """GLUE as the official report gives it: the mean accuracy (×100) over the tasks."""
    folder = _folder(GLUE, root)
    scores = []
    for key, value in merged.items():
        path = folder / f"{key}.valid.jsonl"
        if not path.is_file():
            return None
        labels = [r["label"] for r in read_jsonl(path, ("label",))]
        pairs = list(zip(value["predictions"], labels, strict=False))
        if not pairs:
            return None
        scores.append(100 * sum(p["pred"] == lab for p, lab in pairs) / len(pairs))
    return sum(scores) / len(scores) if scores else None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def report_scores(target: Target, scores: Mapping[str, float]) -> dict[str, float]:
    """The numbers the official report prints for a task (×100): the mean over its subtasks
    (for entity tracking, over every ``<file>_<n>_ops``), the wug test's ρ, reading's two."""
    if target.answer == "reading":
        return {"READING (SPR)": 100 * scores["spr"], "READING (ET)": 100 * scores["rt"]}
    return {target.label: 100 * _mean(list(scores.values()))}


# ----------------------------------------------------------------------------- collation
@dataclass
class Collation:
    """What :func:`collate` wrote (``path``) and the scores it found: ``scores``, the final
    model's as the official report prints them (×100, but AoA's curve fitness, a correlation,
    as it is; None: no data here to score it, said in ``unscored``), and ``fast``, per
    revision the fast sets' (×100, means over subtasks)."""

    path: Path
    scores: dict[str, float | None]
    unscored: dict[str, str]
    fast: dict[str, dict[str, float]] = field(default_factory=dict)


def track_revisions(track: str) -> list[str]:
    """The revisions a track's fast sets are collated for: its checkpoints at words seen."""
    from ..words import revision_name, track_milestones

    return [revision_name(w) for w in track_milestones(TRACKS[track])]


def _hint(kind: str, target: Target | None = None, revision: str = MAIN) -> str:
    if kind == "aoa":
        return (f"run `minidml eval RUN --suite {AOA} --babylm-results DIR` (the final model: "
                "it scores every revision; its data has no public copy: put the official "
                "cdi_childes.json under the data root)")
    if kind == "finetune":
        return (f"run `minidml eval RUN --suite {GLUE} --glue-set {FINETUNE_SET} "
                "--babylm-results DIR`")
    if kind == "boolq":
        return ("boolq's training file has no public copy, so minidml cannot fine-tune it: run "
                "the official fine-tuning (scripts/eval_finetuning.sh) with the official data "
                "and put its predictions.json there")
    step = "" if revision == MAIN else " --step <the checkpoint of " + revision + ">"
    note = (" (its data has no public copy: put the official files under the data root)"
            if target is not None and target.suite in UNPUBLISHED else "")
    suite = target.suite if target is not None else "…"
    return f"run `minidml eval RUN{step} --suite {suite} --babylm-results DIR`{note}"


def collate(results_dir: str | os.PathLike, model: str, *, track: str = "strict",
            fast: bool = False, data_dir: str | os.PathLike | None = None,
            force: bool = False, through: str | None = None) -> Collation:
    """Write ``results_dir/<model>/all_full_preds_and_fast_scores_causal.json`` as the
    official ``collate_preds.py --backend causal --track TRACK [--fast]`` writes it (see the
    module docstring), after checking every file it reads against the data under
    ``data_dir`` (the default data root when None). The revisions (``--fast``'s, and the AoA
    file's) are the track's, or its first ones up to ``through`` for a model trained on
    fewer words than the track allows, as the rules require ("if you only train for 20M
    words … 1M, 2M, …, 10M, 20M"; the official script is edited to do that). Refused, with
    one line naming the file or option and nothing written: an unknown track or revision, a
    missing or malformed file, a wrong number of items, an existing output (unless
    ``force``)."""
    if track not in TRACKS:
        raise MinidmlError(f"--track {track}: unknown; choose {', '.join(TRACKS)} (the "
                           "multimodal track's vision tasks are not minidml's: collate it with "
                           "the official collate_preds.py)")
    every = track_revisions(track)
    if through is not None and through not in every:
        raise MinidmlError(f"--through {through}: no revision of the {track} track; choose one "
                           f"of {', '.join(every)}")
    track_through = every[:every.index(through) + 1] if through is not None else every
    name = model_name(model)
    root = resolve_data_dir(data_dir)
    if data_dir is not None and not root.is_dir():
        raise MinidmlError(f"--data-dir {data_dir}: no such directory; give the folder that "
                           "holds the evaluation data")
    base = Path(results_dir) / name
    if not base.is_dir():
        raise MinidmlError(f"{base}: no such folder; give the folder --babylm-results wrote and "
                           f"--model with the name it filed the model under")
    out = base / COLLATED
    if out.exists() and not force:
        raise MinidmlError(f"{out}: already exists; remove it or pass --force to replace it")
    revisions = track_through if fast else []
    shorter = "" if through is not None else (
        "; or, for a model trained on fewer words than the track allows, --through its last "
        "revision")

    # every file first, so that a missing one is found before any work
    needed: list[tuple[Path, str]] = []
    for target in FULL:
        needed.append((target.path(results_dir, name, MAIN), _hint("eval", target)))
    aoa = aoa_path(results_dir, name)
    needed.append((aoa, _hint("aoa")))
    glue = [finetune_path(results_dir, name, MAIN, task) for task in GLUE_TASKS]
    needed += [(p, _hint("boolq" if task == "boolq" else "finetune"))
               for task, p in zip(GLUE_TASKS, glue, strict=True)]
    for revision in revisions:
        needed += [(t.path(results_dir, name, revision), _hint("eval", t, revision) + shorter)
                   for t in FAST]
    missing = [(p, h) for p, h in needed if not p.is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more files)" if len(missing) > 1 else ""
        raise MinidmlError(f"{missing[0][0]}: missing{more}; {missing[0][1]}")

    cache: dict[str, _Answers | None] = {}
    collated: dict[str, Any] = {}
    for target in FULL:
        path = target.path(results_dir, name, MAIN)
        data = _load(path)
        _check_predictions(path, data, _expected_sizes(target, root, cache), _fields(target))
        collated[target.key] = data
    surprisal = _load(aoa)
    _check_aoa(aoa, surprisal, track_through, _aoa_rows(root), shorter)
    suite = _aoa_suite()
    if suite is not None and suite.human_file(root).is_file():  # it is scored: what it reads
        bad = next((k for k, r in enumerate(surprisal["results"])
                    if not isinstance(r.get("target_word"), str) or "surprisal" not in r), None)
        if bad is not None:
            raise MinidmlError(f"{aoa}: result {bad} lacks 'target_word' or 'surprisal', which "
                               f"the official AoA score reads; {_hint('aoa')}")
    collated["aoa"] = surprisal
    merged: dict[str, Any] = {}
    for task, path in zip(GLUE_TASKS, glue, strict=True):
        data = _load(path)
        _check_predictions(path, data, _glue_size(task, root), ("pred",))
        merged |= data
    collated["glue"] = merged

    fast_scores: dict[str, dict[str, float]] = {}
    if fast:
        by_key: dict[str, list[dict[str, float]]] = {t.key: [] for t in FAST}
        fast_answers: list[_Answers] = []
        for target in FAST:
            answers = _answers(target, root, cache)
            if answers is None:
                raise MinidmlError(
                    f"--fast: no data of {target.suite} under {root} "
                    f"({_data_path(target.suite, root)}) to score the fast sets with; pass "
                    "--data-dir, or put the official fast_eval files there"
                    + (" (this set has no public copy)" if target.suite in UNPUBLISHED else ""))
            fast_answers.append(answers)
        for revision in revisions:
            row: dict[str, float] = {}
            for target, answers in zip(FAST, fast_answers, strict=True):
                path = target.path(results_dir, name, revision)
                data = _load(path)
                _check_predictions(path, data, answers.sizes, _fields(target))
                scores = task_scores(target, data, answers)
                by_key[target.key].append(scores)
                row.update(report_scores(target, scores))
            fast_scores[revision] = row
        collated["fast_eval_results"] = by_key

    text = json.dumps(collated).encode("ascii")
    main_scores, unscored = _main_scores(collated, root, cache)
    try:
        with _io.atomic_open(out, "wb", exclusive=not force) as f:
            f.write(text)
    except FileExistsError:
        raise MinidmlError(f"{out}: already exists; remove it or pass --force to replace "
                           "it") from None
    except OSError as e:
        raise MinidmlError(f"{out}: cannot write ({e.strerror or e})") from None
    return Collation(out, main_scores, unscored, fast_scores)


def _glue_size(task: str, root: Path) -> int:
    path = _folder(GLUE, root) / f"{task}.valid.jsonl"
    if not path.is_file():
        raise MinidmlError(f"--data-dir {root}: no {path} to check finetune/{task} against; "
                           "pass --data-dir, or run `minidml data fetch glue`")
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def _aoa_rows(root: Path) -> tuple[int, str]:
    """The AoA file's results per revision, and whose count that is: the word file's under
    ``root`` (one per word and context), else the official collation's."""
    suite = _aoa_suite()
    counted = suite.row_count(root) if suite is not None else None
    if counted is None:
        return AOA_WORDS, "the official collation expects"
    return counted, "the data's word file holds"


def _check_aoa(path: Path, data: Any, revisions: Sequence[str],
               expected: tuple[int, str] = (AOA_WORDS, "the official collation expects"),
               shorter: str = "") -> None:
    """One result of every AoA word and context (``expected``: how many, and whose count) for
    each of ``revisions`` (the track's, or its first ones), as the official check; ``shorter``
    ends the line of a revision missing (how to collate fewer)."""
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "step" in r for r in rows):
        raise MinidmlError(f"{path}: expected {{\"results\": [{{\"step\": …}}, …]}}; "
                           f"{_hint('aoa')}")
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r["step"]] = counts.get(r["step"], 0) + 1
    lacking = [r for r in revisions if r not in counts]
    extra = [str(s) for s in counts if s not in revisions]
    if lacking or extra:
        what = (f"no results of revision {lacking[0]}" if lacking
                else f"results of {extra[0]}, which is not a revision collated")
        raise MinidmlError(f"{path}: {what} (those collated are {revisions[0]} … "
                           f"{revisions[-1]}); {_hint('aoa')}{shorter if lacking else ''}")
    want, whose = expected
    for revision in revisions:
        if counts[revision] != want:
            raise MinidmlError(f"{path}: {counts[revision]:,} results of {revision}, {whose} "
                               f"{want:,}; {_hint('aoa')}")


def _main_scores(collated: Mapping[str, Any], root: Path, cache: dict[str, _Answers | None]
                 ) -> tuple[dict[str, float | None], dict[str, str]]:
    """The final model's scores as ``calculate_results_from_pred.py`` prints them (×100),
    for the tasks whose data is under ``root``."""
    scores: dict[str, float | None] = {}
    unscored: dict[str, str] = {}
    for target in FULL:
        answers = _answers(target, root, cache)
        labels = (["READING (SPR)", "READING (ET)"] if target.answer == "reading"
                  else [target.label])
        if answers is None:
            for lb in labels:
                scores[lb] = None
                unscored[lb] = f"no data at {_data_path(target.suite, root)}"
            continue
        data = collated[target.key]
        if target.answer == "wug":  # one ρ over every subtask's items together
            probs = [float(i["prob"]) for v in data.values() for i in v["predictions"]]
            ratios = cast("list[float]", answers.ratios)  # a wug test's (_load_answers)
            scores[target.label] = 100 * spearman(probs, ratios[:len(probs)])
            continue
        scores.update(report_scores(target, task_scores(target, data, answers)))
    glue = _glue_score(collated["glue"], root)
    scores["GLUE"] = glue
    if glue is None:
        unscored["GLUE"] = f"no validation files in {_folder('glue', root)}"
    scores["AoA"], why = _aoa_score(collated["aoa"], root)
    if why:
        unscored["AoA"] = why
    return scores, unscored


def _aoa_score(data: Mapping[str, Any], root: Path) -> tuple[float | None, str | None]:
    """The official AoA score (the curve fitness, a correlation, which the report prints as it
    is, not ×100), or None and why: no ``cdi_human.csv`` under ``root``."""
    suite = _aoa_suite()
    if suite is None:
        return None, "no plugin registers the aoa suite to score it"
    human = suite.human_file(root)
    if not human.is_file():
        return None, f"no data at {human}"
    return suite.score_file(data, root)["curve_fitness"], None
