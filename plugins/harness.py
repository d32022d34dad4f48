"""lm-evaluation-harness task files for the zero-shot suites, on the same data files.

:func:`write_tasks` writes one harness task per suite task (a BLiMP paradigm, a supplement
task, an EWoK domain) with the BabyLM 2024 pipeline's multiple-choice templates, reading the
JSON-lines files under minidml's data root, so that ``lm_eval`` scores an exported student on
exactly the examples minidml scores, with no download::

    doc_to_text: ""            doc_to_choice: "{{[sentence_good, sentence_bad]}}"   (BLiMP,
    doc_to_text: "{{Context1}}" doc_to_choice: "{{[Target1, Target2]}}"              supplement;
    doc_to_target: 0, output_type: multiple_choice                                   EWoK)

:func:`lm_eval_command` is the command that runs them (offline, ``--log_samples``) and
:func:`read_samples` reads its per-example log-likelihoods back. ``tests/test_harness.py``
uses them to prove that minidml's scores equal the harness's.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from minidml import MinidmlError

from . import ewok, supplement
from .blimp import BlimpFullSuite, BlimpSuite

__all__ = ["TEMPLATES", "write_tasks", "lm_eval_command", "offline_env", "read_samples"]

_PAIR = {"doc_to_text": "", "doc_to_choice": "{{[sentence_good, sentence_bad]}}"}
# suite -> (folder under the data root, its tasks (None: every *.jsonl there), template)
TEMPLATES: dict[str, tuple[str, tuple[str, ...] | None, dict[str, str]]] = {
    "blimp": (BlimpSuite.folder, None, _PAIR),
    "blimp-full": (BlimpFullSuite.folder, None, _PAIR),
    "blimp-supplement": (supplement.FOLDER, supplement.TASKS, _PAIR),
    "ewok": (ewok.FOLDER, ewok.DOMAINS,
             {"doc_to_text": "{{Context1}}", "doc_to_choice": "{{[Target1, Target2]}}"}),
}


def task_name(suite: str, task: str) -> str:
    return f"minidml_{suite}_{task}".replace("-", "_")


def write_tasks(folder: str | os.PathLike, data_dir: str | os.PathLike,
                suites: Iterable[str] = ("blimp", "blimp-supplement", "ewok"),
                tasks: Mapping[str, Sequence[str]] | None = None) -> dict[str, tuple[str, str]]:
    """Write a task file per (suite, task) into ``folder``; ``tasks`` may pick some tasks
    of a suite. Returns {harness task name: (suite, task)}."""
    folder, data_dir = Path(folder), Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    names = {}
    for suite in suites:
        sub, every, template = TEMPLATES[suite]
        chosen = (tasks or {}).get(suite) or every or sorted(
            p.stem for p in (data_dir / sub).glob("*.jsonl"))
        if not chosen:
            raise MinidmlError(f"{data_dir / sub}: no task files; pass the data root that "
                               f"holds them or run `minidml data fetch {suite}`")
        for task in chosen:
            name = task_name(suite, task)
            path = data_dir / sub / f"{task}.jsonl"
            if not path.is_file():
                raise MinidmlError(f"{path}: not found; run `minidml data fetch {suite}`")
            config = {"task": name, "dataset_path": "json",
                      "dataset_kwargs": {"data_files": {"test": str(path)}},
                      "test_split": "test", "output_type": "multiple_choice",
                      "doc_to_target": 0, **template, "metric_list": [{"metric": "acc"}]}
            (folder / f"{name}.yaml").write_text(json.dumps(config) + "\n")  # JSON is YAML
            names[name] = (suite, task)
    return names


def offline_env(home: str | os.PathLike) -> dict[str, str]:
    """The environment for ``lm_eval`` with the Hugging Face libraries offline and their
    caches under ``home``."""
    return {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(home),
            "TOKENIZERS_PARALLELISM": "false"}


def lm_eval_command(model: str | os.PathLike, tasks_dir: str | os.PathLike,
                    names: Iterable[str], output: str | os.PathLike, *,
                    limit: int | None = None, batch_size: int = 32, device: str = "cpu",
                    python: str = "python") -> list[str]:
    """``lm_eval`` on an exported model (float32) for the given tasks, logging samples."""
    return [python, "-m", "lm_eval", "--model", "hf", "--model_args",
            f"pretrained={model},dtype=float32", "--tasks", ",".join(names),
            "--include_path", str(tasks_dir), "--device", device,
            "--batch_size", str(batch_size), "--log_samples", "--output_path", str(output),
            *(["--limit", str(limit)] if limit is not None else [])]


def read_samples(output: str | os.PathLike, names: Mapping[str, tuple[str, str]]
                 ) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """{(suite, task): the harness's samples in document order}, each with ``doc_id``,
    ``loglikelihoods`` (one float per choice) and ``acc``."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    # longest names first: a task's name may be another's prefix
    ordered = sorted(names, key=len, reverse=True)
    for path in Path(output).rglob("samples_*.jsonl"):
        name = next((n for n in ordered if path.name.startswith(f"samples_{n}_")), None)
        if name is None:
            continue
        rows = []
        for line in path.read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            rows.append({"doc_id": r["doc_id"], "acc": r["acc"],
                         "loglikelihoods": [float(x[0]) for x in r["filtered_resps"]]})
        found[names[name]] = sorted(rows, key=lambda r: r["doc_id"])
    return found
