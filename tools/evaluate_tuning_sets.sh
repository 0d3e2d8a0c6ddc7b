#!/usr/bin/env bash
# Evaluate a checkpoint on the MNI152 tuning sets (tools/build_tuning_sets.py), where choices
# made after training are tuned, never on the held-out Colin27 sets.
#   tools/evaluate_tuning_sets.sh CKPT OUT [extra sammed3d evaluate arguments, e.g. --zoom-spacing 0]
# Whole brain and tissue with click seeds 1..8, lesions at 1 mm and at 1.5 mm with seed 1, and
# the 24 fresh lesions at 1 mm and 1.5 mm (seed 1; FRESH=0 leaves them out): seven kinds of
# target; with SYNTH=1 an eighth, the 48 tuning crops of the generator (Dataset308_Synthetic,
# seed 1; the twin of the held-out generated crops); clicks 1..5, ROI on the first click (as tools/evaluate_default_model.sh). Then prints
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
if [ "$synth" = 1 ] && [ ! -d "$tune/Dataset308_Synthetic" ]; then
    .venv/bin/python tools/build_tuning_sets.py --out "$tune" --synthetic 48 --only-synthetic
fi
sm=(.venv/bin/sammed3d evaluate --clicks 1,3,5 --roi click --strategy random --no-progress
    --checkpoint "$ckpt" "$@")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for seed in 1 2 3 4 5 6 7 8; do
    "${sm[@]}" --data "$tune/Dataset301_MNI152_Brain" --seed "$seed" -o "$out/brain_s$seed" >/dev/null 2>&1
    "${sm[@]}" --data "$tune/Dataset302_MNI152_Tissue" --seed "$seed" -o "$out/tissue_s$seed" >/dev/null 2>&1
done
"${sm[@]}" --data "$tune/Dataset304_MNI152_Lesions" --seed 1 -o "$out/lesions" >/dev/null 2>&1
"${sm[@]}" --data "$tune/Dataset305_MNI152_Lesions15" --seed 1 -o "$out/lesions_15mm" >/dev/null 2>&1
if [ "$fresh" = 1 ]; then
    "${sm[@]}" --data "$tune/Dataset306_MNI152_LesionsB" --seed 1 -o "$out/fresh_lesions" >/dev/null 2>&1
    "${sm[@]}" --data "$tune/Dataset307_MNI152_LesionsB15" --seed 1 -o "$out/fresh_lesions_15mm" >/dev/null 2>&1
fi
if [ "$synth" = 1 ]; then
    "${sm[@]}" --data "$tune/Dataset308_Synthetic" --seed 1 -o "$out/synthetic" >/dev/null 2>&1
fi
.venv/bin/python tools/summarize_tuning.py "$out"
