#!/usr/bin/env bash
# Evaluate a checkpoint on the MNI152 tuning sets (tools/build_tuning_sets.py), where choices
# made after training are tuned, never on the held-out Colin27 sets.
#   tools/evaluate_tuning_sets.sh CKPT OUT [extra sammed3d evaluate arguments, e.g. --zoom-spacing 0]
# Whole brain and tissue with click seeds 1..8, lesions at 1 mm and at 1.5 mm with seed 1;
# clicks 1..5, ROI on the first click (as tools/evaluate_default_model.sh). Then prints the
# mean Dice per class at 1 / 3 / 5 clicks.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ckpt=${1:?checkpoint}
out=${2:?output folder}
shift 2
tune=${TUNE_DIR:-data/model/tune}
[ -d "$tune/Dataset304_MNI152_Lesions" ] || .venv/bin/python tools/build_tuning_sets.py --out "$tune"
sm=(.venv/bin/sammed3d evaluate --clicks 1,3,5 --roi click --strategy random --no-progress
    --checkpoint "$ckpt" "$@")
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for seed in 1 2 3 4 5 6 7 8; do
    "${sm[@]}" --data "$tune/Dataset301_MNI152_Brain" --seed "$seed" -o "$out/brain_s$seed" >/dev/null 2>&1
    "${sm[@]}" --data "$tune/Dataset302_MNI152_Tissue" --seed "$seed" -o "$out/tissue_s$seed" >/dev/null 2>&1
done
"${sm[@]}" --data "$tune/Dataset304_MNI152_Lesions" --seed 1 -o "$out/lesions" >/dev/null 2>&1
"${sm[@]}" --data "$tune/Dataset305_MNI152_Lesions15" --seed 1 -o "$out/lesions_15mm" >/dev/null 2>&1
.venv/bin/python - "$out" <<'PY'
import json, sys
from pathlib import Path
rows: dict[str, list[list[float]]] = {}
for f in sorted(Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(f.read_text())
    for cls, v in s["per_class"].items():
        name = f"{cls} (1.5 mm)" if f.parent.name == "lesions_15mm" else cls
        rows.setdefault(name, []).append([v[k]["dice"]["mean"] for k in ("1", "3", "5")])
for name, runs in rows.items():
    mean = [sum(r[i] for r in runs) / len(runs) for i in range(3)]
    print(f"{name:22s} " + " / ".join(f"{m:.3f}" for m in mean) + f"  ({len(runs)} run(s))")
PY
