#!/usr/bin/env bash
# Held-out evaluation of a checkpoint against region growing, same clicks for both methods.
#   tools/evaluate_default_model.sh [CKPT] [OUT] [extra arguments for the model's evaluate,
#                                                 e.g. --zoom-spacing 0]
#   (default: the bundled model, runs/eval)
# Sets (tools/build_demo_data.py --out data/model): Colin27 whole brain, white matter and
# lateral ventricles (3 runs with different click seeds: they are 3 targets), Colin27 with
# synthetic lesions, held-out generated crops; with WITH_AAL=1 also the Colin27 AAL regions
# (an atlas check: their borders are mostly not visible). BASELINE=0 skips region growing
# (a candidate compared with the bundled model's recorded numbers; its table then shows "-").
# Clicks 1..5 (first uniform in the target, later uniform in the error region, the published
# protocol), ROI placed on the first click as a user gets it. Then prints the summary table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ckpt=${1:-default}
out=${2:-runs/eval}
extra=("${@:3}")
ev=data/model/eval
sm=(.venv/bin/sammed3d evaluate --clicks 1,3,5 --roi click --strategy random --no-progress)
# An output folder that exists is resumed (evaluate's rule), so the baseline, which does not
# depend on the checkpoint, can be copied from an earlier run: cp -r OLD/region_growing OUT/
run() {  # run NAME DATASET SEED
    local name=$1 data=$2 seed=$3
    OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} "${sm[@]}" --data "$ev/$data" --seed "$seed" \
        --checkpoint "$ckpt" --output "$out/model/$name" "${extra[@]}" >/dev/null
    if [ "${BASELINE:-1}" != 0 ]; then
        "${sm[@]}" --data "$ev/$data" --seed "$seed" --method region-growing \
            --output "$out/region_growing/$name" >/dev/null
    fi
}
for seed in 1 2 3; do
    run "brain_s$seed" Dataset201_Colin27_Brain "$seed"
    run "tissue_s$seed" Dataset202_Colin27_Tissue "$seed"
done
run lesions Dataset204_Colin27_Lesions 1
run synthetic Dataset205_Synthetic 1
if [ "${WITH_AAL:-0}" = 1 ]; then  # 116 atlas regions: about 20 min on 2 CPU cores
    run aal Dataset203_Colin27_AAL 1
fi
.venv/bin/python tools/summarize_evaluation.py "$out"
