#!/usr/bin/env bash
# Train (or continue training) the bundled default model on one GPU for about 8 minutes.
#
#   tools/gpu_train_default_model.sh OUT [INIT_CKPT] [KEY=VALUE ...]
#
# 1. a one-minute CUDA check of inference (fast vs published encoder, bf16 vs fp32, click
#    timings) -> OUT/cuda_check.json
# 2. training with the packaged config `default_model` on the GPU: bf16, 8 crops x 4 targets
#    per step, crops generated on the GPU, a checkpoint every 2 minutes in OUT/run, stop after
#    8 minutes (resume: sammed3d train --resume OUT/run run.stop_after_minutes=8)
#    INIT_CKPT (e.g. the CPU run's latest checkpoint) starts from those weights at lr 2e-4.
# 3. OUT/default_model.pth: the last weights, exported without training state.
#
# Needs data/model/train/{shape_bank,anatomy_mni152}.npz (tools/build_demo_data.py) and, on
# the device machine, the Python packages of pyproject.toml that its image lacks (monai,
# SimpleITK, nibabel, connected-components-3d): carry them as wheels, see the device notes.
# Dry run on a CPU: SAMMED3D_GPU_DRY_RUN=1 tools/gpu_train_default_model.sh /tmp/gpu_dry
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:?usage: tools/gpu_train_default_model.sh OUT [INIT_CKPT] [KEY=VALUE ...]}
shift
init=""
if [ $# -gt 0 ] && [[ "$1" != *=* ]]; then init=$1; shift; fi
py=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
mkdir -p "$out"

if [ "${SAMMED3D_GPU_DRY_RUN:-0}" = 1 ]; then
    check=(--device cpu --tiny)
    train=(model.name=sam_med3d_tiny_dense train.device=cpu train.amp=none train.batch_size=2
           data.targets_per_crop=2 data.synthetic_per_epoch=4 train.epochs=1
           run.save_every_minutes=0.05 run.stop_after_minutes=0.5)
else
    check=(--device cuda)
    train=(train.device=cuda train.amp=bf16 train.batch_size=8 data.targets_per_crop=4
           data.synthetic_per_epoch=8000 train.epochs=1 optim.warmup_steps=50
           run.save_every_minutes=2 run.stop_after_minutes=8)
fi
timeout 180 "$py" tools/cuda_check.py --out "$out" "${check[@]}" || echo "cuda check failed (exit $?)" >&2

args=(train --config default_model -o "$out/run" --no-progress
      data.generate_on_device=true data.num_workers=0 run.log_every_steps=10 "${train[@]}")
if [ -n "$init" ]; then args+=(--init "$init" optim.lr=2.0e-4); fi
"$py" -m sammed3d "${args[@]}" "$@" || echo "training ended with exit $?" >&2

"$py" - "$out" <<'PY'
import sys
from pathlib import Path
from sammed3d import load_checkpoint, save_checkpoint
from sammed3d.training.trainer import find_latest_checkpoint
out = Path(sys.argv[1])
ckpt = find_latest_checkpoint(out / "run")
model = load_checkpoint(ckpt)
save_checkpoint(model, out / "default_model.pth", metadata={**model.metadata, "source_checkpoint": str(ckpt)})
print("exported", out / "default_model.pth", "from", ckpt)
PY
