#!/bin/bash
# The full-pass regime of the paper's question: the whole shared corpus (8.56M words), 3
# seeds, every arm's champion checkpointed by words seen and scored on the 2026 fast sets,
# then on every 2026 zero-shot task with data and the 2026 fine-tuning set (capped: 1,000
# training examples and 3 epochs per task).
#
#   docs/results/full-pass/run.sh per-model [--resume] [--only ARMS] [--only-seeds SEEDS]
#       every model reads one pass, T = 3,176 steps of 32 × 128 tokens (13.0M tokens)
#   docs/results/full-pass/run.sh total [--resume] [--only ARMS] [--only-seeds SEEDS]
#       an arm's models read 3T together, so that every model still reads at least one pass:
#       the single student 3 passes, kd's teacher and student 1.5 each, dml's and wml's three
#       students one each -- the same training as per-model's, taken from it (--reuse-from)
#   docs/results/full-pass/run.sh save per-model|total
#       the comparison's record (runs/paper/full-pass-ACCOUNTING without its checkpoints:
#       settings, tokenizer, and each finished arm's metrics, evaluations and per-item
#       verdicts, not its samples) into docs/results/full-pass/ACCOUNTING/; the two runs
#       above save it themselves when they end, however they end
#   docs/results/full-pass/run.sh restore per-model|total
#       that record back into runs/paper/ on another machine, where --resume carries the
#       comparison on from its finished arms (and total reuses per-model's from it)
#
# Run from anywhere; every option is minidml compare's: --resume continues an interrupted
# comparison, --only and --only-seeds run a piece of it (an arm, a seed: 0, 1 or 2).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export MINIDML_DATA_DIR="${MINIDML_DATA_DIR:-$(cd ../shared/data && pwd)}"
words="${1:?usage: run.sh per-model|total [options], or run.sh save|restore per-model|total}"
shift
record() {  # the record of a comparison: every file but checkpoints and locks; finished arms
    local from="$1" to="$2"
    [ -f "$from/compare.json" ] || { echo "run.sh: $from holds no comparison" >&2; exit 2; }
    mkdir -p "$to"
    cp "$from/compare.json" "$from/tokenizer.model" "$to/"
    for arm in "$from"/seed-*/*/; do
        [ -f "$arm/arm.json" ] || continue
        # kd's student is trained from its teacher's checkpoints: a teacher is kept with it
        case "$arm" in */teacher/) [ -f "$arm/../kd/arm.json" ] || continue ;; esac
        local dest="$to/${arm#"$from"/}"
        rm -rf "$dest" && mkdir -p "$dest"
        if [ -f "$arm/eval.samples.jsonl" ] && [ ! -f "$arm/eval.verdicts.json" ]; then
            python -c 'import sys; from minidml.experiments import paired as p
p.write_verdicts(sys.argv[1] + p.VERDICTS_FILE, p.run_verdicts(sys.argv[1]))' "$arm"
        fi
        # the samples' texts and log-likelihoods are the bulk: their verdicts serve the
        # report's paired tests
        tar -C "$arm" --exclude=./checkpoints --exclude='*.lock' --exclude=./tensorboard \
            --exclude=./eval.samples.jsonl -cf - . | tar -C "$dest" -xf -
    done
    for f in report.json report.md; do [ ! -f "$from/$f" ] || cp "$from/$f" "$to/"; done
}
case "$words" in
    save|restore)
        which="${1:?usage: run.sh $words per-model|total}"
        case "$which" in per-model|total) ;; *) echo "run.sh: the accounting is per-model or total, not '$which'" >&2; exit 2 ;; esac
        kept="docs/results/full-pass/$which" running="runs/paper/full-pass-$which"
        if [ "$words" = save ]; then
            record "$running" "$kept"
        else
            [ ! -e "$running" ] || { echo "run.sh: $running exists; restore only where it does not" >&2; exit 2; }
            record "$kept" "$running"
        fi
        exit 0 ;;
esac
case "$words" in
    per-model) reading=() ;;
    total) reading=(--tokens $((3 * 3176 * 32 * 128)) --curve-words 3M,6M,9M,12M,15M,18M,21M,24M
                    --reuse-from runs/paper/full-pass-per-model) ;;
    *) echo "run.sh: the accounting is per-model or total, not '$words'" >&2; exit 2 ;;
esac
status=0
minidml compare ../shared/data/babylm-2024-100M-snippets --budget 2.9M --students 3 \
    --vocab-size 8192 --words "$words" --seeds 3 "${reading[@]}" \
    --suites blimp,blimp-supplement,ewok,entity-tracking,wug-adj,reading,glue \
    --glue-set 2026 --max-train-examples 1000 --glue-epochs 3 \
    --curve-suites babylm-fast --eval-points 20 --eval-students champion \
    --out "runs/paper/full-pass-$words" --quiet "$@" || status=$?
# whatever finished is kept in the record at once, even if the comparison stopped later
if [ -f "runs/paper/full-pass-$words/compare.json" ]; then
    record "runs/paper/full-pass-$words" "docs/results/full-pass/$words"
    echo "the record: docs/results/full-pass/$words"
fi
exit "$status"
