#!/bin/bash
# The one-pass regime of the paper's question: the whole shared corpus (8.56M words), 2M
# training tokens per model (a fraction of one epoch: no token is seen twice), 3 seeds. Run
# from anywhere; pass --resume to continue an interrupted comparison.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export MINIDML_DATA_DIR="${MINIDML_DATA_DIR:-$(cd ../shared/data && pwd)}"
minidml compare ../shared/data/babylm-2024-100M-snippets --budget 5M --students 3 \
    --tokens 2M --vocab-size 4096 --seeds 3 \
    --suites blimp,blimp-supplement,ewok,glue --glue-tasks rte,mrpc,sst2,wsc \
    --max-train-examples 1000 --glue-epochs 3 --eval-points 20 --eval-students champion \
    --out runs/paper/one-pass --quiet "$@"
