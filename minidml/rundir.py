"""The run directory: what a run writes, and reading it back.

A run directory holds everything needed to reload or continue a run::

    config.json          settings, student shapes, tokenizer and corpus fingerprints, versions
    tokenizer.model      the shared sentencepiece model
    metrics.jsonl        one JSON record per log interval and per evaluation
    checkpoints/step-00000500/
        student-0.pt ... weights, one file per student (loadable with weights_only=True)
        state.pt         optimisers, ω, step, RNG states, metrics offset

A checkpoint directory is written under a temporary name and renamed when complete, so a
crash never leaves a half-written checkpoint; the two most recent are kept, and loading falls
back to the older one if the newer is damaged.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch

from . import _io
from ._version import __version__
from .config import TrainConfig
from .data import Batches
from .errors import MinidmlError, describe, one_line
from .lock import LOCK_NAME
from .model import Student, StudentConfig
from .runtime import resolve_device
from .tokenizer import Tokenizer

CHECKPOINTS_KEPT = 2


# ----------------------------------------------------------------------------- reading a run
@dataclass
class Run:
    """A trained (or training) run, as :func:`load` gives it back."""

    path: Path
    config: TrainConfig
    tokenizer: Tokenizer
    students: list[Student]
    omega: torch.Tensor
    step: int
    last_eval: dict[str, Any] | None = None  # the latest validation record, if any

    @property
    def device(self) -> torch.device:
        return self.students[0].embed.weight.device

    @property
    def champion(self) -> int:
        """The student with the lowest validation loss at the latest evaluation (student 0 when
        the run was never evaluated): chosen on held-out text, never on a test suite."""
        losses = (self.last_eval or {}).get("val_loss")
        if not isinstance(losses, list) or not losses:
            return 0

        def loss(i: int) -> float:  # a NaN, or what is no number (a hand-edited file): last
            v = losses[i]
            ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            return v if ok else math.inf

        return min(range(len(losses)), key=lambda i: (loss(i), i))

    def generate(self, prompt: str = "", student: int = 0, max_new_tokens: int = 50,
                 temperature: float = 0.8, top_k: int | None = 50, seed: int = 0) -> str:
        """``prompt`` and a continuation sampled from one student (after a BOS token)."""
        prompt_ids = self.tokenizer.encode(prompt)
        ids = torch.tensor([[Tokenizer.bos_id, *prompt_ids]], device=self.device)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        model = self.students[student].eval()
        out = model.generate(ids, max_new_tokens, temperature, top_k,
                             eos_id=Tokenizer.eos_id, generator=gen)
        # decoded in context: alone, a continuation's first word would lose its space
        head = self.tokenizer.decode(prompt_ids)
        return prompt + self.tokenizer.decode(out[0, 1:].tolist())[len(head):]


def load(run_dir: str | os.PathLike, device: str = "cpu", step: int | None = None) -> Run:
    """Students, tokenizer, ω and settings of a run directory: its latest checkpoint, or the
    checkpoint of ``step``."""
    path = Path(run_dir)
    meta = read_run_config(path)
    tokenizer = Tokenizer.load(path / "tokenizer.model")
    cfg = TrainConfig.from_dict(meta["config"], f"{path / 'config.json'}")
    check_tokenizer(path, meta, tokenizer)
    scfgs = student_configs(cfg, tokenizer.vocab_size)
    dev = resolve_device(device)
    for _ in range(5):  # a training run may rotate the newest checkpoint away meanwhile
        ckpt = latest_checkpoint(path) if step is None else checkpoint_of(path, step)
        if ckpt is None:
            raise MinidmlError(f"{path}: no complete checkpoint yet; train longer or resume it")
        try:
            students, state = load_checkpoint(ckpt, scfgs, dev)
            break
        except CheckpointGone:
            if step is not None:
                raise MinidmlError(f"--step {step}: its checkpoint {ckpt} was removed while "
                                   "being read (a training run rotated it); train with "
                                   "--keep-checkpoints 0 to keep every one") from None
    else:
        raise MinidmlError(f"{path}: its checkpoints were rotated away five times while being "
                           "read; try again, or read it once training has stopped")
    step = int(state["step"])
    return Run(path, cfg, tokenizer, students, state["omega"].to(dev), step,
               last_eval=_last_eval(path / "metrics.jsonl", step))


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl``: a line cut short by a crash is skipped, and
    so is one that is not UTF-8 (with a warning naming the file and how many)."""
    records, unreadable = [], 0
    try:
        with open(path, "rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw.decode("utf-8"))
                except UnicodeDecodeError:
                    unreadable += 1
                    continue
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict):
                    records.append(rec)
    except FileNotFoundError:
        pass
    if unreadable:
        warnings.warn(f"{path}: skipped {unreadable} line(s) that are not UTF-8", stacklevel=2)
    return records


def _last_eval(path: Path, step: int) -> dict[str, Any] | None:
    """The latest validation record at or before ``step``."""
    evals = [r for r in read_metrics(path)
             if r.get("event") == "eval" and isinstance(r.get("step"), int) and r["step"] <= step
             and isinstance(r.get("val_loss"), list)]
    return evals[-1] if evals else None


def check_tokenizer(path: Path, meta: dict[str, Any], tokenizer: Tokenizer) -> None:
    """The run's tokenizer.model must be the one its config.json recorded."""
    want = meta.get("tokenizer", {})
    if want.get("vocab_size") not in (None, tokenizer.vocab_size) or \
            want.get("sha256") not in (None, tokenizer.sha256):
        raise MinidmlError(f"{path / 'tokenizer.model'}: not the tokenizer this run was "
                           f"trained with (vocabulary {tokenizer.vocab_size}, config.json "
                           f"says {want.get('vocab_size')}); restore the run's own file")


def read_run_config(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MinidmlError(f"{path}: not a minidml run (no config.json); give a run "
                           "directory written by minidml train") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise MinidmlError(f"{path / 'config.json'}: unreadable ({e}); the run is damaged") \
            from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise MinidmlError(f"{path / 'config.json'}: missing its 'config' table")
    for key, kind in RUN_FIELDS.items():  # what readers use of it, hand edits included
        if key in meta and not isinstance(meta[key], kind):
            found = "null" if meta[key] is None else type(meta[key]).__name__
            raise MinidmlError(f"{path / 'config.json'}: field {key!r} must be a "
                               f"{'table' if kind is dict else 'list'}, not {found}; restore "
                               "it (or remove the field)")
    return meta


# the fields of a run's config.json that readers use, and what each must be
RUN_FIELDS = {"tokenizer": dict, "students": list, "corpus": dict, "precision": dict,
              "compile": dict, "teachers": list, "words": dict, "plan": dict}


def student_configs(cfg: TrainConfig, vocab_size: int) -> list[StudentConfig]:
    return [StudentConfig.from_shape(s, vocab_size, cfg.context) for s in cfg.students]


CHECKPOINT_NAME = re.compile(r"step-\d{8,}")  # a copy beside them (step-N.bak) is not one


def checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first."""
    root = run_dir / "checkpoints"
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and CHECKPOINT_NAME.fullmatch(p.name))


def checkpoint_steps(run_dir: Path) -> list[int]:
    """Steps of the complete checkpoints, oldest first."""
    return [int(p.name.removeprefix("step-")) for p in checkpoints(run_dir)]


def checkpoint_of(run_dir: Path, step: int) -> Path:
    """The checkpoint of ``step``; a step without one is a one-line error naming those
    there are."""
    steps = checkpoint_steps(run_dir)
    if step not in steps:
        have = ", ".join(map(str, steps)) or "none"
        raise MinidmlError(f"--step {step}: {run_dir} has no checkpoint of that step (it has: "
                           f"{have}); train with --keep-checkpoints 0 to keep them all")
    return run_dir / "checkpoints" / f"step-{step:08d}"


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = checkpoints(run_dir)
    return found[-1] if found else None


class CheckpointGone(MinidmlError):
    """The checkpoint was removed (rotated by a training run) before its files were open."""


def load_checkpoint(ckpt: Path, scfgs: list[StudentConfig], device: torch.device
                     ) -> tuple[list[Student], dict[str, Any]]:
    """Students and training state of one checkpoint; weights-only unpickling throughout.

    Every file is opened before any is read, so a checkpoint that a training run rotates
    away meanwhile is read whole (rotation renames a checkpoint out of sight first, then
    deletes it); one gone before its files were open raises :class:`CheckpointGone`."""
    names = [*(f"student-{i}.pt" for i in range(len(scfgs))), "state.pt"]
    files: dict[str, Any] = {}
    try:
        for name in names:
            try:
                files[name] = open(ckpt / name, "rb")  # noqa: SIM115 - closed below
            except FileNotFoundError:
                if not ckpt.is_dir():
                    raise CheckpointGone(f"{ckpt}: removed while being read") from None
                raise MinidmlError(f"{ckpt / name}: missing; the checkpoint is incomplete"
                                   ) from None
        return _read_checkpoint(ckpt, scfgs, device, files)
    finally:
        for f in files.values():
            f.close()


def _read_checkpoint(ckpt: Path, scfgs: list[StudentConfig], device: torch.device,
                     files: dict[str, Any]) -> tuple[list[Student], dict[str, Any]]:
    def read(name: str) -> Any:
        try:
            return torch.load(files[name], map_location=device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling errors have many types
            why = (f"{type(e).__name__}: an empty file"
                   if os.fstat(files[name].fileno()).st_size == 0 else describe(e, 160))
            raise MinidmlError(f"{ckpt / name}: refused or damaged ({why})") from None

    students = []
    for i, scfg in enumerate(scfgs):
        model = Student(scfg).to(device)
        try:
            model.load_state_dict(read(f"student-{i}.pt"))
        except (RuntimeError, TypeError, AttributeError) as e:
            raise MinidmlError(f"{ckpt / f'student-{i}.pt'}: does not match the config "
                               f"({one_line(e, 160)})") from None
        students.append(model.eval())
    state = read("state.pt")
    for key, kinds in STATE_FIELDS.items():
        if not isinstance(state, dict) or not isinstance(state.get(key), kinds):
            raise MinidmlError(f"{ckpt / 'state.pt'}: no valid {key!r}; the checkpoint is "
                               "damaged")
    return students, state


# what a checkpoint's state.pt must hold for anything to read it
STATE_FIELDS = {"step": int, "omega": torch.Tensor, "optimizers": list, "rng": dict}


def write_checkpoint(run_dir: Path, step: int, students: Sequence[torch.nn.Module],
                     state: Mapping[str, Any], keep: int = CHECKPOINTS_KEPT,
                     words: Mapping[str, Any] | None = None) -> Path:
    """Write ``checkpoints/step-N`` atomically and keep the newest ``keep`` (0: all).

    ``words`` (words seen, and the ``revisions`` this checkpoint is published as, if any)
    goes into its ``words.json``; a checkpoint with revisions is kept for good."""
    root = run_dir / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for i, s in enumerate(students):
            with _io.atomic_open(tmp / f"student-{i}.pt") as f:
                torch.save(s.state_dict(), f)
        with _io.atomic_open(tmp / "state.pt") as f:
            torch.save(dict(state), f)
        if words is not None:
            _io.write_json(tmp / "words.json", dict(words))
        if final.exists():
            _remove_checkpoint(final)
        os.replace(tmp, final)
        _io.fsync_dir(root)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MinidmlError(f"{root}: cannot write checkpoint ({e.strerror or e}); free "
                           "space or choose another --out; the previous checkpoint is "
                           "intact") from None
    rotating = [c for c in checkpoints(run_dir) if not revisions(c)]
    for old in rotating[:-keep] if keep > 0 else []:
        _remove_checkpoint(old)
    return final


def _remove_checkpoint(ckpt: Path) -> None:
    """Rename a checkpoint out of sight, then delete it: a reader sees it whole or not at
    all (one that opened its files first keeps reading them)."""
    hidden = ckpt.with_name(f".deleting-{ckpt.name}-{os.getpid()}")
    try:
        os.replace(ckpt, hidden)
    except OSError:
        hidden = ckpt
    shutil.rmtree(hidden, ignore_errors=True)


def checkpoint_scores(run_dir: str | os.PathLike) -> dict[int, dict[str, Any]]:
    """The results of ``minidml eval --step N`` (or ``--step all``) of a run, by step: its
    ``eval/results-step<N>-<date>.json`` files, the newest one for each step. A file that is
    not a results file (damaged, cut short) is a :class:`MinidmlError` naming it."""
    def written(f: Path) -> tuple[str, int]:
        """Its date, then its place among the files of that second (``…-2.json`` after the
        first, ``….json``)."""
        stamp, _, n = f.stem.split("-", 2)[2].partition("-")
        return stamp, int(n) if n.isdigit() else 1

    found: dict[int, dict[str, Any]] = {}
    for f in sorted(Path(run_dir, "eval").glob("results-step*-*.json"), key=written):
        step = f.name.removeprefix("results-step").split("-", 1)[0]
        if step.isdigit():  # in the order written: the newest of a step wins
            try:
                doc = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                doc = e
            if not isinstance(doc, dict) or not isinstance(doc.get("groups"), dict):
                raise MinidmlError(f"{f}: not a results file of minidml eval (damaged or cut "
                                   f"short); remove it, or evaluate step {step} again")
            found[int(step)] = doc
    return dict(sorted(found.items()))


def checkpoint_words(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's ``words.json`` (words seen, revisions), or {} if it has none."""
    try:
        data = json.loads((ckpt / "words.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def revisions(ckpt: Path) -> list[str]:
    """The revisions (``chck_1M``, …) a checkpoint is published as: kept for good."""
    names = checkpoint_words(ckpt).get("revisions", [])
    return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []


def newest_good_checkpoint(run_dir: Path, scfgs: list[StudentConfig], device: torch.device
                           ) -> tuple[Path, list[Student], dict[str, Any], list[str]] | None:
    """The newest checkpoint that loads (its students, its state, and what was wrong with
    any newer ones), after removing leftovers of an interrupted write; ``None`` when the
    run has no checkpoint yet."""
    for stale in [*(run_dir / "checkpoints").glob(".tmp-*"),
                  *(run_dir / "checkpoints").glob(".deleting-*")]:
        shutil.rmtree(stale, ignore_errors=True)
    found = checkpoints(run_dir)
    if not found:
        return None
    errors: list[str] = []
    for ckpt in reversed(found):
        try:
            return (ckpt, *load_checkpoint(ckpt, scfgs, device), errors)
        except MinidmlError as e:
            errors.append(str(e))
    raise MinidmlError(f"{run_dir}: no usable checkpoint to resume from ({errors[0]})")


def truncate_metrics(run_dir: Path, size: int) -> None:
    """Drop the records that ``metrics.jsonl`` got after its first ``size`` bytes."""
    metrics = run_dir / "metrics.jsonl"
    if metrics.exists():
        with open(metrics, "r+b") as f:
            f.truncate(size)


# ----------------------------------------------------------------------------- writing a run
def default_run_dir(corpus: Sequence[str | os.PathLike], root: str | os.PathLike = "runs"
                    ) -> Path:
    stem = Path(corpus[0]).name.split(".")[0] or "corpus"
    return Path(root) / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run(root: str | os.PathLike = "runs") -> Path | None:
    """The most recently modified run directory under ``root``, if any."""
    root = Path(root)
    runs = [p for p in root.glob("[!.]*/config.json")] if root.is_dir() else []
    return max(runs, key=lambda p: p.stat().st_mtime).parent if runs else None


def stopped_before_start(out: Path) -> bool:
    """A run directory that a killed ``train`` left before writing its ``config.json``:
    at most a tokenizer and temporary files."""
    return (out.is_dir() and not (out / "config.json").exists()
            and all(p.name == "tokenizer.model" or p.name.startswith(".")
                    for p in out.iterdir()))


def prepare_run_dir(out: Path, resume: bool, force: bool,
                     keep: Sequence[str | os.PathLike] = ()) -> None:
    if resume:
        if not (out / "config.json").exists():
            raise MinidmlError(f"--resume: {out} holds no run to resume; drop --resume to "
                               "start one")
        return
    new_out_dir(out, force, keep)


def check_outside_corpus(out: Path, corpus: Sequence[str | os.PathLike],
                         option: str = "--out") -> None:
    """A run (or comparison) directory inside a corpus directory would be read as its text
    by the next run on that corpus (and the corpus would differ on resuming): refused."""
    for c in corpus:
        c = Path(c)
        if c.is_dir() and out.resolve().is_relative_to(c.resolve()):
            raise MinidmlError(f"{option} {out}: inside the corpus directory {c}, whose files "
                               f"are read as the text; choose an {option} outside it")


def replaceable(out: Path, force: bool, keep: Sequence[str | os.PathLike] = ()
                ) -> list[Path]:
    """What ``--out`` holds (its lock aside), which a new run there replaces: refused unless
    ``force``, and never where it holds a path of ``keep`` (the corpus, a teacher)."""
    if out.exists() and not out.is_dir():
        raise MinidmlError(f"--out {out}: exists and is not a directory; choose another path")
    content = [p for p in out.iterdir() if p.name != LOCK_NAME] if out.exists() else []
    if content:
        inside = [k for k in keep if Path(k).resolve().is_relative_to(out.resolve())]
        if inside:
            raise MinidmlError(f"--out {out}: holds {inside[0]}, which this run reads; choose "
                               "another --out")
        if not force:
            raise MinidmlError(f"--out {out}: already exists; pass --resume to continue it "
                               "or --force to overwrite it")
    return content


def new_out_dir(out: Path, force: bool, keep: Sequence[str | os.PathLike] = ()) -> None:
    """An empty, writable directory at ``--out``: what it holds is refused, or emptied with
    ``force`` (:func:`replaceable`)."""
    for p in replaceable(out, force, keep):  # the lock this process holds stays
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MinidmlError(f"--out {out}: not writable ({e.strerror}); choose another "
                           "directory") from None


def check_resume_config(saved: dict[str, Any], cfg: TrainConfig, out: Path) -> None:
    old = TrainConfig.from_dict(saved["config"], str(out / "config.json")).to_dict()
    new = cfg.to_dict()
    # where it runs, what to do about NaNs and where it is tracked may change; teachers may
    # move (their identity, not their path, is checked against config.json's records);
    # precision auto keeps the precision the run started with
    for key in sorted(new):
        if key == "precision" and new[key] == "auto":
            continue
        if (key not in ("device", "on_nonfinite", "teachers", "log_to")
                and old.get(key) != new[key]):
            raise MinidmlError(f"--resume: option {key!r} differs from the run's config.json "
                               f"({old.get(key)!r} there, {new[key]!r} now); use the same "
                               "settings or start a new run with another --out")


def recorded_compile(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Whether a resumed run started compiled (runs from before compiling existed did not)."""
    record = meta.get("compile")
    if isinstance(record, dict) and isinstance(record.get("choice"), bool):
        return record
    return {"requested": "off", "choice": False, "line": "compile: off (as the run started)"}


def recorded_precision(meta: Mapping[str, Any], cfg: TrainConfig) -> dict[str, Any]:
    """The precision a resumed run started with (runs from before ``auto`` existed recorded
    none: theirs was the configured one)."""
    record = meta.get("precision")
    if isinstance(record, dict) and record.get("choice") in ("fp32", "bf16"):
        return record
    return {"requested": cfg.precision, "choice": "bf16" if cfg.precision == "bf16" else "fp32"}


def write_run_files(out_dir: Path, cfg: TrainConfig, scfgs: list[StudentConfig],
                     tokenizer: Tokenizer, files: list[Path], corpus_hash: str,
                     batches: Batches, total_steps: int, teacher_meta: list[dict[str, Any]],
                     world_size: int, precision: dict[str, Any], compiled: dict[str, Any],
                     words: dict[str, Any] | None = None) -> None:
    tokenizer.save(out_dir / "tokenizer.model")
    _io.write_json(out_dir / "config.json", {
        "minidml_version": __version__, "torch_version": torch.__version__,
        "created": _io.utc_now(), "config": cfg.to_dict(), "world_size": world_size,
        "students": [{**c.__dict__, "n_params": c.n_params} for c in scfgs],
        "tokenizer": {"vocab_size": tokenizer.vocab_size, "sha256": tokenizer.sha256,
                      "type": cfg.tokenizer_type, "boundary": tokenizer.boundary},
        "corpus": {"files": [str(f) for f in files], "fingerprint": corpus_hash,
                   "train_tokens": batches.n_train_tokens, "val_tokens": batches.n_val_tokens},
        "total_steps": total_steps, "precision": precision, "compile": compiled,
        **({"teachers": teacher_meta} if teacher_meta else {}),
        **({"words": words} if words is not None else {}),
    })
    (out_dir / "metrics.jsonl").touch()
