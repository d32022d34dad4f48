#!/bin/bash
# The full-pass regime of the paper's question: the whole shared corpus (8.56M words), one
# pass (T) per model or per arm, 3 seeds, every arm's champion checkpointed by words seen and
# scored on the 2026 fast sets, then on every 2026 zero-shot task with data and the 2026
# fine-tuning set (capped: 1,000 training examples and 3 epochs per task).
#
#   docs/results/full-pass/run.sh per-model [--seeds 1] [--resume]   # every model reads T
#   docs/results/full-pass/run.sh total [--seeds 1] [--resume]       # an arm's models read T
#
# Run from anywhere; --resume continues an interrupted comparison, and with more --seeds
# grows one made with fewer.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export MINIDML_DATA_DIR="${MINIDML_DATA_DIR:-$(cd ../shared/data && pwd)}"
words="${1:?usage: run.sh per-model|total [options]}"
shift
minidml compare ../shared/data/babylm-2024-100M-snippets --budget 2.9M --students 3 \
    --vocab-size 8192 --words "$words" --seeds 3 \
    --suites blimp,blimp-supplement,ewok,entity-tracking,wug-adj,reading,glue \
    --glue-set 2026 --max-train-examples 1000 --glue-epochs 3 \
    --curve-suites babylm-fast --eval-points 20 --eval-students champion \
    --out "runs/paper/full-pass-$words" --quiet "$@"
