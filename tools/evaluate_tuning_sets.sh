#!/usr/bin/env bash
# Evaluate a checkpoint on the tuning sets (tools/build_tuning_sets.py: MNI152 structures and
# lesions, and with SYNTH=1 generated crops), where choices made after training are tuned,
# never on the held-out sets.
#   tools/evaluate_tuning_sets.sh CKPT OUT [extra sammed3d evaluate arguments, e.g. --zoom-spacing 0]
# Whole brain and tissue with click seeds 1..8, lesions at 1 mm and at 1.5 mm with seed 1, and
# the 24 fresh lesions at 1 mm and 1.5 mm (seed 1; FRESH=0 leaves them out): seven kinds of
# target; with SYNTH=1 an eighth, the 48 tuning crops of the generator (Dataset308_Synthetic,
# seed 1; the twin of the held-out generated crops); clicks 1..5, ROI on the first click (as
# tools/evaluate_default_model.sh). An evaluate error is shown and stops the run. Then prints
# tools/summarize_tuning.py's table: mean Dice per kind at 1 / 3 / 5 clicks, the mean of the
# kinds and the clicks that lowered Dice. An output folder that exists is resumed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ckpt=${1:?checkpoint}
out=${2:?output folder}
shift 2
tune=${TUNE_DIR:-data/model/tune}
fresh=${FRESH:-1}
if [ ! -d "$tune/Dataset304_MNI152_Lesions" ] || { [ "$fresh" = 1 ] && [ ! -d "$tune/Dataset306_MNI152_LesionsB" ]; }; then
    .venv/bin/python tools/build_tuning_sets.py --out "$tune" --fresh-lesions 24
fi
synth=${SYNTH:-0}
crops=$tune/Dataset308_Synthetic/imagesTs
if [ "$synth" = 1 ] && [ "$(ls "$crops" 2>/dev/null | wc -l)" != 48 ]; then
    # missing, or built with another count: the 48 crops the docs' numbers are on
    .venv/bin/python tools/build_tuning_sets.py --out "$tune" --synthetic 48 --only-synthetic
fi
sm=(.venv/bin/sammed3d evaluate --clicks 1,3,5 --roi click --strategy random --no-progress
    --checkpoint "$ckpt" "$@")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
mkdir -p "$out"
# evaluate's notices (ROI budget) are kept out of the way; an error is shown and stops the run
ev() {
    if ! "${sm[@]}" "$@" >/dev/null 2>"$out/.evaluate.log"; then
        echo "tools/evaluate_tuning_sets.sh: sammed3d evaluate failed ($*):" >&2
        grep -v "^ROI extension stopped" "$out/.evaluate.log" | tail -n 3 >&2
        exit 2
    fi
}
for seed in 1 2 3 4 5 6 7 8; do
    ev --data "$tune/Dataset301_MNI152_Brain" --seed "$seed" -o "$out/brain_s$seed"
    ev --data "$tune/Dataset302_MNI152_Tissue" --seed "$seed" -o "$out/tissue_s$seed"
done
ev --data "$tune/Dataset304_MNI152_Lesions" --seed 1 -o "$out/lesions"
ev --data "$tune/Dataset305_MNI152_Lesions15" --seed 1 -o "$out/lesions_15mm"
if [ "$fresh" = 1 ]; then
    ev --data "$tune/Dataset306_MNI152_LesionsB" --seed 1 -o "$out/fresh_lesions"
    ev --data "$tune/Dataset307_MNI152_LesionsB15" --seed 1 -o "$out/fresh_lesions_15mm"
fi
if [ "$synth" = 1 ]; then
    ev --data "$tune/Dataset308_Synthetic" --seed 1 -o "$out/synthetic"
fi
.venv/bin/python tools/summarize_tuning.py "$out"
