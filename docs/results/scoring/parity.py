"""minidml's zero-shot suites against lm-evaluation-harness on one exported student.

    python docs/results/scoring/parity.py RUN_DIR [--suites blimp,blimp-supplement,ewok]

exports RUN_DIR's champion, scores it with ``lm_eval`` (task files from
``minidml_plugins.harness``, offline, ``--log_samples``) and with ``minidml.evaluate``, and
writes ``parity.json`` and ``parity.md`` beside this script: per task both accuracies
(minidml under ``--protocol lm-eval``), the largest difference of any example's
log-likelihood, the ties, and minidml's accuracy under ``--protocol babylm-2026`` (the
official 2026 pipeline's rule: the sentence as the tokenizer encodes it, no leading space).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import minidml
from minidml.evaluation.runner import evaluate
from minidml.evaluation.scoring import Scorer
from minidml.evaluation.suite import resolve_data_dir
from minidml.hf.export import export_hf
from minidml_plugins import harness

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--suites", default="blimp,blimp-supplement,ewok")
    ap.add_argument("--data-dir")
    ap.add_argument("--out", default=str(HERE))
    args = ap.parse_args()
    suites = args.suites.split(",")
    data_dir = resolve_data_dir(args.data_dir)
    run = minidml.load(args.run)
    i = run.champion
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = export_hf(run, i, tmp / "hf")
        names = harness.write_tasks(tmp / "tasks", data_dir, suites)
        t0 = time.perf_counter()
        cmd = harness.lm_eval_command(model, tmp / "tasks", names, tmp / "results",
                                      batch_size=64, python=sys.executable)
        subprocess.run(cmd, env=harness.offline_env(tmp / "hf-home"), check=True,
                       stdout=subprocess.DEVNULL)
        lm_eval_s = time.perf_counter() - t0
        theirs = harness.read_samples(tmp / "results", names)
    t0 = time.perf_counter()
    ours = evaluate(run, suites, student=str(i), data_dir=data_dir, batch_size=64,
                    protocol="lm-eval")
    minidml_s = time.perf_counter() - t0
    label = f"student-{i}"
    official = Scorer(run.students, run.tokenizer, run.omega, labels=[label], batch_size=64,
                      protocol="babylm-2026")
    rows, worst = [], 0.0
    for outcome in ours.outcomes:
        suite = outcome.spec.name
        by_task: dict[str, list] = {}
        for s in outcome.result.samples:
            by_task.setdefault(s.task, []).append(s)
        for task, samples in sorted(by_task.items()):
            h = theirs[(suite, task)]
            assert [r["doc_id"] for r in h] == [s.index for s in samples]
            diffs = [abs(a - b) for r, s in zip(h, samples, strict=True)
                     for a, b in zip(r["loglikelihoods"], s.scores[label], strict=True)]
            worst = max(worst, *diffs)
            metrics = outcome.result.tasks[label][task].metrics
            texts = [t for s in samples for t in (s.pair.good, s.pair.bad)]
            contexts = [s.pair.context for s in samples for _ in range(2)]
            by_2026 = official.score(texts, contexts)[label]
            rows.append({"suite": suite, "task": task, "n": len(samples),
                         "acc_lm_eval": sum(r["acc"] for r in h) / len(h),
                         "acc_minidml": metrics["acc"], "ties": int(metrics["ties"]),
                         "acc_babylm_2026": float((by_2026[0::2] >= by_2026[1::2])
                                                  .double().mean()),
                         "max_abs_loglik_diff": max(diffs)})
    macro = {}
    for suite in suites:
        mine = [r for r in rows if r["suite"] == suite]
        macro[suite] = {k: sum(r[k] for r in mine) / len(mine)
                        for k in ("acc_lm_eval", "acc_minidml", "acc_babylm_2026")}
    report = {"run": str(run.path), "student": label, "shape": str(run.students[i].config.shape),
              "step": run.step, "lm_eval": "0.4.13", "seconds": {"lm_eval": lm_eval_s,
                                                                  "minidml": minidml_s},
              "max_abs_loglik_diff": worst, "equal_accuracies": all(
                  abs(r["acc_lm_eval"] * r["n"] - r["acc_minidml"] * r["n"]) < 0.5
                  for r in rows),
              "macro": macro, "tasks": rows}
    out = Path(args.out)
    (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [f"# minidml against lm-evaluation-harness 0.4.13: {label} of `{run.path.name}` "
             f"({report['shape']}, step {run.step})", "",
             f"Largest difference of any example's log-likelihood: {worst:.2e}. "
             f"Every task's accuracy equal: {report['equal_accuracies']}.", "",
             "| suite | lm-eval | minidml (lm-eval) | minidml (babylm-2026) |",
             "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s} | {100 * m['acc_lm_eval']:.2f} | {100 * m['acc_minidml']:.2f} | "
              f"{100 * m['acc_babylm_2026']:.2f} |" for s, m in macro.items()]
    lines += ["", "| suite | task | n | lm-eval | minidml | ties | babylm-2026 | "
              "max Δ log-lik |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    lines += [f"| {r['suite']} | {r['task']} | {r['n']} | {100 * r['acc_lm_eval']:.2f} | "
              f"{100 * r['acc_minidml']:.2f} | {r['ties']} | "
              f"{100 * r['acc_babylm_2026']:.2f} | {r['max_abs_loglik_diff']:.1e} |"
              for r in rows]
    (out / "parity.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:12]))


if __name__ == "__main__":
    main()
