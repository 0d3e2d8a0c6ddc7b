"""The on-the-fly synthetic data generator (``sammed3d.training.synthesis``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sammed3d.training.data import sample_rng
from sammed3d.training.synthesis import (
    Anatomy,
    GeneratedDataset,
    ShapeBank,
    SynthesisConfig,
    SyntheticGenerator,
    component_at,
    connected_component_at,
    label_components,
    load_shape_bank,
    save_shape_bank,
    zscore_positive,
)

SMALL = SynthesisConfig(size=48, objects=(4, 8), radius=(2.0, 10.0), min_target_voxels=20)


def _border_contrast(image: torch.Tensor, target: torch.Tensor) -> float:
    """|mean inside - mean of a 2-voxel ring| in units of the image's std."""
    ring = torch.nn.functional.max_pool3d(target[None, None].float(), 5, 1, 2)[0, 0] > 0
    ring &= ~target
    return float((image[target].mean() - image[ring].mean()).abs() / image.std())


def test_samples_are_deterministic_and_seed_dependent():
    gen = SyntheticGenerator(SMALL)
    a_img, a_lab = gen.sample(3)
    b_img, b_lab = gen.sample(3)
    c_img, _ = gen.sample(4)
    assert torch.equal(a_img, b_img) and torch.equal(a_lab, b_lab)
    assert not torch.equal(a_img, c_img)
    assert a_img.shape == (48, 48, 48) and a_img.dtype == torch.float32
    assert a_lab.shape == (1, 48, 48, 48) and a_lab.dtype == torch.bool


def test_targets_are_connected_visible_and_normalised():
    gen = SyntheticGenerator(SMALL)
    contrasts = []
    for seed in range(12):
        image, label = gen.sample(seed)
        target = label[0]
        assert int(target.sum()) >= SMALL.min_target_voxels
        seed_voxel = tuple(int(v) for v in torch.nonzero(target)[0])
        assert torch.equal(connected_component_at(target, seed_voxel), target)  # one component
        contrasts.append(_border_contrast(image, target))
        assert torch.isfinite(image).all() and (image < 0).any() and (image > 0).any()
    # the target differs from its surroundings (the generator refuses invisible targets)
    assert np.median(contrasts) > 0.3


def test_label_components_separates_values_and_6_connectivity():
    labels = torch.zeros((6, 6, 6), dtype=torch.int64)
    labels[0:2, 0:2, 0:2] = 1  # a cube of label 1
    labels[3, 3, 3] = 1  # label 1 again, not connected to the cube
    labels[2:4, 0:2, 0:2] = 2  # touches the cube but is another label
    labels[4, 4, 4] = 1  # touches (3, 3, 3) only diagonally: its own component
    ids = label_components(labels)
    assert ids.dtype == torch.int32 and ids.shape == labels.shape
    assert bool((ids == 0).eq(labels == 0).all())
    assert len(torch.unique(ids[ids > 0])) == 4
    cube = component_at(ids, (1, 1, 1))
    assert int(cube.sum()) == 8 and bool(cube[0, 0, 0]) and not bool(cube[3, 3, 3])
    assert int(component_at(ids, (3, 3, 3)).sum()) == 1
    assert int(component_at(ids, (2, 0, 0)).sum()) == 8  # label 2 block
    assert not bool(component_at(ids, (5, 5, 5)).any())  # background seed: empty
    # the same answers as one binary mask at a time
    for seed in [(1, 1, 1), (3, 3, 3), (2, 1, 1), (4, 4, 4)]:
        value = int(labels[seed])
        assert torch.equal(component_at(ids, seed), connected_component_at(labels == value, seed))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_label_components_on_cuda_match_cpu():
    gen = SyntheticGenerator(SMALL)
    _, label = gen.sample(2, targets=2)
    labels = label[0].long() + 2 * label[1].long()
    cpu = label_components(labels)
    gpu = label_components(labels.cuda())
    assert gpu.device.type == "cuda" and torch.equal(gpu.cpu(), cpu)


def test_several_targets_per_crop_are_distinct():
    gen = SyntheticGenerator(SMALL)
    _, label = gen.sample(5, targets=3)
    assert label.shape == (3, 48, 48, 48)
    distinct = {tuple(torch.nonzero(t)[0].tolist()) for t in label}
    assert len(distinct) >= 2


def test_raw_sample_is_the_unnormalised_image():
    gen = SyntheticGenerator(SMALL)
    raw, label = gen.sample_raw(7)
    image, label2 = gen.sample(7)
    assert torch.equal(label, label2)
    assert torch.allclose(zscore_positive(raw), image)


def test_shape_bank_roundtrip_and_use(tmp_path):
    lab = np.zeros((20, 20, 20), dtype=np.uint8)
    lab[2:12, 3:9, 4:16] = 1
    lab[14:19, 14:19, 14:19] = 2
    bank = ShapeBank.from_label_maps([lab], min_voxels=20)
    assert len(bank) == 2
    path = tmp_path / "bank.npz"
    save_shape_bank(bank, path)
    again = load_shape_bank(path)
    assert [tuple(s.shape) for s in again.shapes] == [tuple(s.shape) for s in bank.shapes]
    cfg = SynthesisConfig(size=48, objects=(4, 6), p_ellipsoid=0, p_blob=0, p_tube=0, p_shell=0)
    gen = SyntheticGenerator(cfg, shape_bank=again)
    image, label = gen.sample(1)
    assert label.any() and torch.isfinite(image).all()


def test_anatomy_crops_have_lesion_or_tissue_targets():
    rng = np.random.default_rng(0)
    grid = np.indices((40, 40, 40)).astype(np.float32)
    dist = np.sqrt(((grid - 20) ** 2).sum(0))
    tissue = np.where(dist < 16, 2, 0) + (dist < 8)  # shell of "GM" around "WM"
    image = np.where(tissue == 3, 1.0, np.where(tissue == 2, 0.6, 0.05)).astype(np.float32)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    anatomy = Anatomy(image, tissue.astype(np.uint8))
    gen = SyntheticGenerator(SMALL)
    img, label = gen.sample_anatomy(anatomy, seed=11, targets=2)
    assert img.shape == (48, 48, 48) and label.shape == (2, 48, 48, 48)
    assert all(int(t.sum()) >= SMALL.min_target_voxels for t in label)


def _ball_anatomy(structures: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 40^3 "brain": WM ball (radius 8) in a GM shell (radius 16) with a dark "ventricle"
    bar inside the WM; structures bit 0 brain, bit 1 WM, bit 2 ventricle."""
    rng = np.random.default_rng(0)
    grid = np.indices((40, 40, 40)).astype(np.float32)
    dist = np.sqrt(((grid - 20) ** 2).sum(0))
    tissue = (np.where(dist < 16, 2, 0) + (dist < 8)).astype(np.uint8)
    vent = np.zeros(tissue.shape, dtype=bool)
    vent[17:23, 18:22, 18:22] = True
    tissue[vent] = 1
    image = np.where(tissue == 3, 1.0, np.where(tissue == 2, 0.6, 0.05)).astype(np.float32)
    image += rng.normal(0, 0.01, image.shape).astype(np.float32)
    bits = (tissue > 0).astype(np.uint8) | ((dist < 8) & ~vent).astype(np.uint8) << 1
    bits |= vent.astype(np.uint8) << 2
    return image, tissue, bits


def test_anatomy_structure_crops_target_the_structure_under_the_centre():
    image, tissue, bits = _ball_anatomy()
    anatomy = Anatomy(image, tissue, structures=bits, p_structure=1.0)
    assert [len(v) for v in anatomy.structure_voxels] == [
        int((bits & (1 << b) > 0).sum()) for b in range(3)
    ]
    cfg = SynthesisConfig(size=48, min_target_voxels=20)
    gen = SyntheticGenerator(cfg)
    sizes = set()
    for seed in range(12):
        _, label = gen.sample_anatomy(anatomy, seed=seed, targets=1)
        target = label[0]
        # the crop is centred in the structure: the target holds the centre or a voxel next to it
        near = target[22:27, 22:27, 22:27]
        assert near.any(), seed
        sizes.add(int(target.sum()) // 500)
    # the three structures have very different sizes (brain ~17k, WM ~2k, bar ~100 voxels at
    # scale 1, times the crop's random scale^3): more than one size class is drawn
    assert len(sizes) >= 2


def test_innermost_structure_clicks_give_a_click_one_meaning():
    image, tissue, bits = _ball_anatomy()
    brain, wm, vent = ((bits & (1 << b)) > 0 for b in range(3))
    anatomy = Anatomy(image, tissue, structures=bits, p_structure=1.0, structure_clicks="innermost")
    sites = [{tuple(int(c) for c in v) for v in voxels} for voxels in anatomy.structure_voxels]
    # the brain is clicked only outside the white matter and the ventricle bar; the others
    # wherever they are (neither holds a smaller structure)
    assert sites[0] == {tuple(v) for v in np.argwhere(brain & ~wm & ~vent)}
    assert sites[1] == {tuple(v) for v in np.argwhere(wm)}
    assert sites[2] == {tuple(v) for v in np.argwhere(vent)}
    # the target is still the whole structure: a brain crop's target is the whole brain
    gen = SyntheticGenerator(SynthesisConfig(size=48, min_target_voxels=20))
    plain = Anatomy(image, tissue, structures=bits & 0b001, p_structure=1.0)
    whole = gen.sample_anatomy(plain, seed=3, targets=1)[1][0]
    only_brain = Anatomy(
        image, tissue, structures=bits & 0b001, p_structure=1.0, structure_clicks="innermost"
    )
    assert torch.equal(gen.sample_anatomy(only_brain, seed=3, targets=1)[1][0], whole)


def test_innermost_structure_clicks_errors():
    image, tissue, bits = _ball_anatomy()
    with pytest.raises(ValueError, match="structure_clicks must be one of any, innermost"):
        Anatomy(image, tissue, structures=bits, structure_clicks="inner")
    twice = bits | ((bits & 0b010) << 2)  # bit 3 = the white matter again
    with pytest.raises(ValueError, match="bit 3 lies entirely inside smaller structures"):
        Anatomy(image, tissue, structures=twice, structure_clicks="innermost")


def test_anatomy_without_structures_draws_as_before():
    image, tissue, bits = _ball_anatomy()
    gen = SyntheticGenerator(SMALL)
    plain = gen.sample_anatomy(Anatomy(image, tissue), seed=5, targets=2)
    unused = gen.sample_anatomy(Anatomy(image, tissue, structures=bits), seed=5, targets=2)
    assert torch.equal(plain[0], unused[0]) and torch.equal(plain[1], unused[1])


def test_anatomy_structure_errors(tmp_path):
    image, tissue, bits = _ball_anatomy()
    with pytest.raises(ValueError, match="needs a structures map"):
        Anatomy(image, tissue, p_structure=0.5)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        Anatomy(image, tissue, structures=bits, p_structure=1.5)
    with pytest.raises(ValueError, match="bit 1 is set nowhere"):
        Anatomy(image, tissue, structures=bits & 0b101)
    with pytest.raises(ValueError, match="the image's shape"):
        Anatomy(image, tissue, structures=bits[:-1])
    path = tmp_path / "anatomy.npz"
    np.savez(path, image=image, tissue=tissue)
    with pytest.raises(ValueError, match="rebuild it with tools/build_demo_data.py"):
        Anatomy.load(path, p_structure=0.5)
    assert Anatomy.load(path).structures is None
    np.savez(path, image=image, tissue=tissue, structures=bits)
    assert Anatomy.load(path, p_structure=0.5).p_structure == 0.5
    names = np.array(["brain", "wm", "ventricle"])
    np.savez(path, image=image, tissue=tissue, structures=bits & 0b011, structure_names=names)
    with pytest.raises(ValueError, match=r"bit 2 \(ventricle\) is set nowhere"):
        Anatomy.load(path)
    np.savez(path, image=image, tissue=tissue, structures=bits, structure_names=names[:2])
    with pytest.raises(ValueError, match="bit 2 is set but only 2 structures are named"):
        Anatomy.load(path)


def test_generated_dataset_items_are_keyed(tmp_path):
    ds = GeneratedDataset(4, SMALL, seed=2, targets=2)
    item = ds[(1, 3)]
    again = ds[(1, 3)]
    other = ds[(2, 3)]
    assert item["image"].shape == (1, 48, 48, 48) and item["label"].shape == (2, 48, 48, 48)
    assert torch.equal(item["image"], again["image"]) and item["seed"] == again["seed"]
    assert not torch.equal(item["image"], other["image"])
    # the click seed comes from the same per-sample generator as for real data
    rng = sample_rng(2, 1, 3)
    rng.integers(2**62)
    assert int(item["seed"]) == int(rng.integers(2**62))
    deferred = GeneratedDataset(4, SMALL, seed=2, targets=2, defer=True)
    d = deferred[(1, 3)]
    assert "image" not in d and "synth_seed" in d
    img, lab = deferred.draw(d["synth_seed"][None], d["source"][None], "cpu")
    assert torch.equal(img[0], item["image"]) and torch.equal(lab[0], item["label"])
    with pytest.raises(ValueError):
        GeneratedDataset(0, SMALL)
