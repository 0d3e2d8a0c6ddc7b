"""Training data: resumable sampler, per-sample randomness, the pre-processing cache, crops."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from sammed3d.data import transforms as T
from sammed3d.io import read_volume
from sammed3d.training.config import load_config
from sammed3d.training.data import (
    AugmentConfig,
    CacheParams,
    EpochDistributedSampler,
    SyntheticDataset,
    batch_zscore,
    build_cache,
    drop_summary,
    finish_sample,
    load_cached_targets,
    sample_rng,
)
from sammed3d.training.trainer import build_training_dataset

from .conftest import write_nnunet_dataset


def test_sampler_shards_are_disjoint_and_resumable():
    data = list(range(10))
    shards = []
    for rank in range(2):
        s = EpochDistributedSampler(data, num_replicas=2, rank=rank, seed=3)
        s.set_epoch(4)
        keys = list(s)
        assert all(epoch == 4 for epoch, _ in keys)
        shards.append([i for _, i in keys])
    assert set(shards[0]).isdisjoint(shards[1]) and set(shards[0]) | set(shards[1]) == set(data)
    one = EpochDistributedSampler(data, num_replicas=1, rank=0, seed=3)
    one.set_epoch(4)
    full = [i for _, i in one]
    assert full[0::2] == shards[0] and full[1::2] == shards[1]  # same order as one process
    one.set_start(6)
    assert [i for _, i in one] == full[6:] and len(one) == 4
    one.set_epoch(5)
    one.set_start(0)
    assert [i for _, i in one] != full  # reshuffled per epoch
    limited = EpochDistributedSampler(data, num_replicas=1, rank=0, seed=3, limit=8)
    assert len(list(limited)) == 8
    with pytest.raises(ValueError, match="start must be in"):
        limited.set_start(9)


def test_samples_are_a_function_of_their_key():
    ds = SyntheticDataset(3, 32, seed=5)
    a, b = ds[(1, 2)], ds[(1, 2)]
    torch.testing.assert_close(a["image"], b["image"])
    assert int(a["seed"]) == int(b["seed"])
    other_epoch = ds[(2, 2)]
    assert int(other_epoch["seed"]) != int(a["seed"])
    assert a["image"].shape == (1, 32, 32, 32) and a["label"].dtype == torch.float32


def test_flips_move_image_and_label_together():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 16, 16)).astype(np.float32) + 5
    label = np.zeros((16, 16, 16), bool)
    label[1:4, 2:6, 9:15] = True
    image[label] = 100.0
    flipped = 0
    for epoch in range(8):
        out = finish_sample(
            image, label, sample_rng(0, epoch, 0), AugmentConfig(flip_prob=0.5, normalize=False)
        )
        img, lab = out["image"][0].numpy(), out["label"][0].numpy() > 0
        assert lab.sum() == label.sum()
        assert np.all(img[lab] == 100.0)
        flipped += not np.array_equal(lab, label)
    assert flipped > 0


def test_per_sample_zscore_and_batch_zscore():
    ds = SyntheticDataset(2, 32, seed=1, aug=AugmentConfig(flip_prob=0.0))
    raw, _ = ds.volume(0)
    x = ds[(0, 0)]["image"][0].numpy()
    expected = (raw - raw[raw > 0].mean()) / raw[raw > 0].std(ddof=1)
    np.testing.assert_allclose(x, expected, rtol=1e-4, atol=1e-4)
    batch = torch.stack([torch.from_numpy(ds.volume(i)[0])[None] for i in range(2)])
    z = batch_zscore(batch)
    values = z[batch > 0]
    assert abs(float(values.mean())) < 1e-4 and abs(float(values.std()) - 1) < 1e-4


def test_cache_pipeline_matches_the_transforms(tmp_path):
    # LPS-flipped first axis, anisotropic spacing: the cache must canonicalise and resample
    direction = np.diag([-1.0, 1.0, 1.0])
    root = write_nnunet_dataset(
        tmp_path / "Dataset002_Flip", n_cases=2, spacing=(1.0, 1.2, 2.0), direction=direction
    )
    cfg = load_config("tiny_cpu", [f"data.roots=[{root}]", f"data.cache_dir={tmp_path / 'cache'}"])
    ds = build_training_dataset(cfg, show_progress=False)
    assert len(ds) == 2  # the 8-voxel "speck" targets are dropped
    cache_root = tmp_path / "cache" / CacheParams().folder_name()
    manifest = [
        json.loads(x)
        for x in (cache_root / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert [m["kept"] for m in manifest] == [True, False, True, False]
    assert "voxels <" in manifest[1]["reason"]

    # reference: the shared transforms, step by step
    t = ds.targets[0]
    image = read_volume(root / "imagesTr" / "case_000_0000.nii.gz")
    label = read_volume(root / "labelsTr" / "case_000.nii.gz")
    ref_img = T.ct_clamp(T.to_canonical(T.resample(image, (1.5, 1.5, 1.5))).array)
    ref_lab = T.to_canonical(T.resample(label, (1.5, 1.5, 1.5), interpolation="nearest")).array
    np.testing.assert_allclose(np.load(t.image), ref_img, rtol=1e-5, atol=1e-3)
    np.testing.assert_array_equal(np.load(t.label), ref_lab)
    assert np.load(t.image).max() <= 1000.0  # CT clamp from dataset.json's modality
    assert t.center == pytest.approx(T.bbox_center(ref_lab == 1))

    # the un-augmented crop is centred on the target's bounding box
    img_crop, lab_crop = ds.crop(0)
    assert img_crop.shape == (64, 64, 64)
    ref_crop, _ = T.crop_or_pad(ref_lab == 1, T.bbox_center(ref_lab == 1), size=64)
    np.testing.assert_array_equal(lab_crop, ref_crop)


def test_cache_is_reused_and_bad_cases_are_dropped(tmp_path):
    root = write_nnunet_dataset(tmp_path / "Dataset003_X", n_cases=2)
    # break the second case: label geometry differs from the image
    from sammed3d.io import write_volume

    lab_path = root / "labelsTr" / "case_001.nii.gz"
    lab = read_volume(lab_path)
    write_volume(type(lab)(lab.array, (2.0, 2.0, 2.0), lab.origin, lab.direction), lab_path)

    from sammed3d.data.layout import discover_dataset, iter_targets

    targets = iter_targets(discover_dataset(root, split="train"))
    cache = build_cache(targets, tmp_path / "c", CacheParams(), show_progress=False)
    drops: dict[str, int] = {}
    kept = load_cached_targets(
        targets, cache, min_target_voxels=20, write_manifest=True, drops=drops
    )
    assert [k.case_id for k in kept] == ["case_000"]
    # the second case's two targets failed; case_000's speck (8 voxels) is under 20
    assert drops == {"pre-processing failed": 2, "too small": 1}
    assert drop_summary(drops, 20, [1.5, 1.5, 1.5]) == (
        "1 dropped with fewer than data.min_target_voxels=20 voxels at 1.5 mm (0.0675 ml); "
        "2 whose case failed pre-processing"
    )
    lines = [
        json.loads(x) for x in (cache / "manifest.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert "does not match its image" in lines[2]["reason"]
    stamp = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    build_cache(targets, tmp_path / "c", CacheParams(), show_progress=False)
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == stamp


def test_empty_roots_is_an_error(tmp_path):
    cfg = load_config("tiny_cpu", [f"run.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="data.roots is empty"):
        build_training_dataset(cfg, show_progress=False)


def test_a_label_value_nobody_declared_is_recorded_and_warned_about(tmp_path, caplog):
    """2026-12-03 trial: interactive training took a label file holding an undeclared value
    without a word (prepare and semantic training refuse it)."""
    import logging

    from sammed3d.io import write_volume

    root = write_nnunet_dataset(tmp_path / "Dataset004_Odd", n_cases=2)
    path = root / "labelsTr" / "case_000.nii.gz"
    label = read_volume(path)
    array = np.asarray(label.array).copy()
    array[40:44, 40:42, 30:32] = 7
    write_volume(label.with_array(array), path)
    cfg = load_config("tiny_cpu", [f"run.output_dir={tmp_path / 'run'}", f"data.roots=[{root}]"])
    with caplog.at_level(logging.WARNING, logger="sammed3d.training"):
        build_training_dataset(cfg, show_progress=False)
    assert (
        "1 label file(s) hold values their dataset.json does not declare, never trained on "
        "(a wrong label file?): case_000.nii.gz: 7" in caplog.text
    )


def test_a_class_with_no_target_left_is_named(tmp_path, caplog):
    """2026-12-03 re-trial: every lesion under data.min_target_voxels, and train said only
    'kept 5 of 10 targets'."""
    import logging

    root = write_nnunet_dataset(tmp_path / "Dataset005_Specks", n_cases=2)  # specks: 8 voxels
    cfg = load_config(
        "tiny_cpu",
        [f"run.output_dir={tmp_path / 'run'}", f"data.roots=[{root}]", "data.min_target_voxels=20"],
    )
    with caplog.at_level(logging.WARNING, logger="sammed3d.training"):
        kept = build_training_dataset(cfg, show_progress=False)
    assert len(kept) == 2
    assert (
        "class(es) 'speck': no training target left (every one dropped, see above), so never "
        "trained; lower data.min_target_voxels (now 20) to train small ones" in caplog.text
    )
