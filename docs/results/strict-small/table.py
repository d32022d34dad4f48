"""The fast-set scores of every checkpoint of a run, as a Markdown table by words seen.

    python docs/results/strict-small/table.py runs/t29/strict-small > table.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(run_dir: Path) -> None:
    latest: dict[int, dict] = {}
    for path in sorted((run_dir / "eval").glob("results-step*.json")):
        data = json.loads(path.read_text())
        latest[data["step"]] = data  # the newest evaluation of each step
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
    evals = {r["step"]: min(r["val_loss"]) for r in metrics if r["event"] == "eval"}
    print("| revision | step | words seen | validation loss | BLiMP-fast | supplement-fast | "
          "EWoK-fast | wug_adj-fast ρ | reading-fast ET / SPR |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for step, data in sorted(latest.items()):
        words_file = run_dir / "checkpoints" / f"step-{step:08d}" / "words.json"
        words = json.loads(words_file.read_text()) if words_file.exists() else {}
        names = ", ".join(words.get("revisions", [])) or "—"
        groups, per = data["groups"]["student-0"], data["results"]["student-0"]
        near = min(evals, key=lambda s: (abs(s - step), -s))
        loss = f"{evals[near]:.3f}" + ("" if near == step else f" (step {near:,})")
        print(f"| {names} | {step:,} | {words.get('words', 0) / 1e6:.2f}M | {loss} | "
              f"{100 * groups['blimp-fast']['score']:.1f} | "
              f"{100 * groups['supplement-fast']['score']:.1f} | "
              f"{100 * groups['ewok-fast']['score']:.1f} | "
              f"{per['wug-adj-fast/wug_adj']['rho']:.2f} | "
              f"{100 * per['reading-fast/eye_tracking']['rel_delta_r2']:.1f} / "
              f"{100 * per['reading-fast/self_paced_reading']['rel_delta_r2']:.1f} |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
