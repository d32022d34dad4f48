#!/bin/bash
# The data-limited regime of the paper's question: a 100k-word sample of the shared corpus,
# 2.5M training tokens per model (about 14 epochs), 3 seeds. Run from anywhere; pass --resume
# to continue an interrupted comparison.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export MINIDML_DATA_DIR="${MINIDML_DATA_DIR:-$(cd ../shared/data && pwd)}"
subset=runs/dl/subset-100k.txt
[ -f "$subset" ] || python docs/results/data-limited/subset.py "$subset" --words 100k --seed 0
minidml compare "$subset" --budget 5M --students 3 --tokens 2.5M --seeds 3 \
    --suites blimp,blimp-supplement,ewok,glue --glue-tasks rte,mrpc,sst2,wsc \
    --max-train-examples 1000 --glue-epochs 3 --eval-points 20 --eval-students champion \
    --config docs/results/data-limited/compare.toml --out runs/paper/data-limited --quiet "$@"
