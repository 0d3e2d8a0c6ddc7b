"""Border contrast, edge strength and the first-click rules built on them
(sammed3d.inference.contrast)."""

from __future__ import annotations

import numpy as np
import pytest

from sammed3d.config import (
    ModelConfig,
    check_contrast_guard,
    check_first_pick,
    check_later_check,
)
from sammed3d.inference.contrast import (
    CONTRAST_RATIO,
    EDGE_SAMPLES,
    MIN_CONTRAST_VOXELS,
    border_contrast,
    click_inside_z,
    click_like_inside,
    contrast_pick,
    edge_pick,
    edge_score,
    edge_strength,
    later_click_refused,
    mask_edge_score,
)

FULL = (slice(0, 30), slice(0, 30), slice(0, 30))


def _ball(radius: float, centre=(15, 15, 15), shape=(30, 30, 30)) -> np.ndarray:
    grid = np.indices(shape).transpose(1, 2, 3, 0)
    return np.linalg.norm(grid - np.asarray(centre), axis=-1) <= radius


def _image(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (np.where(_ball(6.0), 300.0, 100.0) + rng.normal(0, 10, (30, 30, 30))).astype(np.float32)


def test_the_value_of_a_small_example():
    image = np.zeros((8, 8, 8), np.float32)
    mask = np.zeros((8, 8, 8), bool)
    mask[3:5, 3:5, 3:5] = True  # 8 voxels: the smallest mask with a contrast
    image[mask] = 10.0
    image[2, 3, 3] = 4.0  # one voxel of the ring differs
    ring = [4.0] + [0.0] * 23  # one face-connected step around a 2^3 cube: 6 faces x 4 voxels
    expected = abs(10.0 - np.mean(ring)) / (0.0 + np.std(ring))
    whole = (slice(0, 8),) * 3
    assert border_contrast(image, whole, mask, ring=1) == pytest.approx(expected)
    assert border_contrast(image, whole, mask) > 0  # two steps: a larger ring, same idea


def test_a_mask_too_small_for_a_statistic_has_no_contrast():
    image = _image()
    tiny = np.zeros((30, 30, 30), bool)
    tiny[15, 15, 14:16] = True  # 2 voxels of the bright ball's centre
    assert tiny.sum() < MIN_CONTRAST_VOXELS
    assert border_contrast(image, FULL, tiny) == 0.0
    # so it never replaces a pick, however its voxels differ from their surroundings
    assert contrast_pick([0.1, border_contrast(image, FULL, tiny), 0.3], 0, 0.4) == 0


def test_the_object_is_sharp_and_a_mask_cut_through_it_is_not():
    image = _image()
    assert border_contrast(image, FULL, _ball(6.0)) > 3.0
    assert border_contrast(image, FULL, _ball(3.0)) < 0.2  # inside the bright ball only
    blend = border_contrast(image, FULL, _ball(11.0))  # the ball and much background
    assert 0.2 < blend < border_contrast(image, FULL, _ball(6.0)) / CONTRAST_RATIO


def test_it_is_free_of_intensity_scale_and_offset():
    image, mask = _image(), _ball(6.0)
    a = border_contrast(image, FULL, mask)
    assert border_contrast(image * 7.0 - 500.0, FULL, mask) == pytest.approx(a, rel=1e-6)


def test_a_block_placed_by_its_slices_equals_the_whole_image_mask():
    image, mask = _image(1), _ball(6.0, centre=(13, 16, 15))
    where = (slice(4, 25), slice(8, 27), slice(6, 26))
    assert border_contrast(image, where, mask[where]) == pytest.approx(
        border_contrast(image, FULL, mask)
    )
    corner = _ball(4.0, centre=(1, 1, 28))  # the ring is clipped by the image faces
    assert border_contrast(image, FULL, corner) > 0


def test_degenerate_masks_and_bad_arguments():
    image = _image()
    assert border_contrast(image, FULL, np.zeros((30, 30, 30), bool)) == 0.0
    assert border_contrast(image, FULL, np.ones((30, 30, 30), bool)) == 0.0  # nothing around
    with pytest.raises(ValueError, match="block has shape"):
        border_contrast(image, FULL, np.zeros((29, 30, 30), bool))
    with pytest.raises(ValueError, match="ring must be at least 1"):
        border_contrast(image, FULL, _ball(6.0), ring=0)


def test_the_pick_gives_way_only_to_a_clearly_sharper_extent():
    assert contrast_pick([0.1, 1.2, 0.8], 0, 0.4) == 1  # the sharpest one
    assert contrast_pick([0.5, 1.2], 0, 0.4) == 0  # the pick is sharp enough
    assert contrast_pick([0.3, 0.5], 0, 0.4) == 0  # not twice as sharp
    assert contrast_pick([0.1, 0.3], 0, 0.4) == 0  # twice, but below the threshold
    assert contrast_pick([0.9, 0.05, 0.6], 1, 0.4) == 0
    assert contrast_pick([0.0, 2.0], 0, 0.0) == 0  # off


@pytest.mark.parametrize("bad", [-0.1, 10.5, float("nan"), True, "0.4"])
def test_bad_thresholds_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="contrast_guard must be 0"):
        check_contrast_guard(bad)
    if isinstance(bad, float):
        with pytest.raises(ValueError, match="contrast_guard must be 0"):
            ModelConfig(contrast_guard=bad)


def test_the_error_names_what_it_checks_and_shows_the_value():
    with pytest.raises(
        ValueError,
        match=r"^--contrast-guard must be 0 \(off\) or a border contrast of at most 10, got 12$",
    ):
        check_contrast_guard(12, "--contrast-guard")
    with pytest.raises(ValueError, match=r"got '0\.4'$"):  # not a number: shown as given
        check_contrast_guard("0.4")


def test_the_threshold_travels_in_the_config():
    cfg = ModelConfig(contrast_guard=0.4)
    assert ModelConfig.from_dict(cfg.to_dict()).contrast_guard == 0.4
    assert cfg == ModelConfig()  # a behaviour, not compared when weights are matched


def test_edge_strength_of_a_small_example():
    image = np.zeros((9, 9, 9), np.float32)
    mask = np.zeros((9, 9, 9), bool)
    mask[3:6, 3:6, 3:6] = True  # a 27-voxel cube: 26 boundary voxels, its centre inside
    image[mask] = 10.0
    whole = (slice(0, 9),) * 3
    # every window straddles the cube's face: inside 10, outside 0 -> the gap is 10
    assert edge_strength(image, whole, mask, window=3) == pytest.approx(10.0)
    image[0, 0, 0] = 1000.0  # out of every window of a boundary voxel
    assert edge_strength(image, whole, mask, window=3) == pytest.approx(10.0)
    image[2, 4, 4] = 10.0  # one outside voxel as bright as the inside: a few windows only
    assert edge_strength(image, whole, mask, window=3) == pytest.approx(10.0)  # the median
    image[:5] = 10.0  # the space beside most of the cube as bright as it: edges gone there
    low = edge_strength(image, whole, mask, window=3)
    assert 0 < low < 10.0


def test_edge_strength_follows_the_edge_and_not_the_cut():
    image = _image()
    sharp = edge_strength(image, FULL, _ball(6.0))
    assert sharp > 150.0  # the bright ball's step is 200
    assert edge_strength(image, FULL, _ball(3.0)) < 30.0  # inside the bright ball only
    assert edge_strength(image, FULL, _ball(11.0)) < 30.0  # in the background only
    # unit of the image, offset free
    assert edge_strength(image * 3.0 + 50.0, FULL, _ball(6.0)) == pytest.approx(3 * sharp, rel=1e-4)


def test_edge_strength_of_a_placed_block_and_at_the_image_faces():
    image, mask = _image(1), _ball(6.0, centre=(13, 16, 15))
    where = (slice(4, 25), slice(8, 27), slice(6, 26))
    assert edge_strength(image, where, mask[where]) == pytest.approx(
        edge_strength(image, FULL, mask)
    )
    corner = _ball(4.0, centre=(1, 1, 28))  # windows clipped by the image faces
    assert edge_strength(image, FULL, corner) >= 0


def test_edge_strength_of_a_large_mask_reads_a_subsample():
    rng = np.random.default_rng(3)
    image = rng.normal(0, 1, (80, 80, 80)).astype(np.float32)
    mask = np.zeros((80, 80, 80), bool)
    mask[5:75, 5:75, 5:75] = True  # about 29,000 boundary voxels
    image[mask] += 4.0
    whole = (slice(0, 80),) * 3
    assert np.count_nonzero(mask) - 68**3 > EDGE_SAMPLES
    assert edge_strength(image, whole, mask) == pytest.approx(4.0, abs=0.2)


def test_edge_strength_degenerate_masks_and_bad_arguments():
    image = _image()
    assert edge_strength(image, FULL, np.zeros((30, 30, 30), bool)) == 0.0
    assert edge_strength(image, FULL, np.ones((30, 30, 30), bool)) == 0.0  # no mixed window
    tiny = np.zeros((30, 30, 30), bool)
    tiny[15, 15, 14:16] = True
    assert edge_strength(image, FULL, tiny) == 0.0
    with pytest.raises(ValueError, match="block has shape"):
        edge_strength(image, FULL, np.zeros((29, 30, 30), bool))
    for bad in (4, 1):
        with pytest.raises(ValueError, match="window must be an odd number"):
            edge_strength(image, FULL, _ball(6.0), window=bad)


def test_the_edge_pick_takes_the_highest_score():
    assert edge_score(4.0, 3.0) == pytest.approx(6.0)
    assert edge_score(0.0, 3.0) == 0.0
    # two constant regions: an infinite contrast; it counts only with a gap at the border
    assert edge_score(float("inf"), 0.0) == 0.0
    assert edge_score(float("inf"), 1.0) == float("inf")
    assert edge_score(float("nan"), 1.0) == 0.0
    assert edge_pick([float("inf"), 1.0], [0.0, 1.0]) == 1
    assert edge_pick([0.25, 1.0, 4.0], [10.0, 4.0, 1.0]) == 0  # 5 > 4 > 2
    assert edge_pick([1.0, 4.0], [1.0, 1.0]) == 1
    assert edge_pick([1.0, 1.0], [2.0, 2.0]) == 0  # the first of equals: the model's pick
    with pytest.raises(ValueError, match="one strength .and one click test. per contrast"):
        edge_pick([1.0], [])
    with pytest.raises(ValueError, match="one strength .and one click test. per contrast"):
        edge_pick([], [])


@pytest.mark.parametrize("bad", ["Edges", "", None, 1])
def test_bad_first_picks_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="first_pick must be one of model, edges"):
        check_first_pick(bad)
    with pytest.raises(ValueError, match="first_pick must be one of"):
        ModelConfig(first_pick=bad)


@pytest.mark.parametrize(("option", "default"), [("first_pick", "model"), ("later_check", "none")])
def test_the_rule_choices_travel_in_the_config(option, default):
    cfg = ModelConfig(**{option: "edges"})
    assert getattr(ModelConfig.from_dict(cfg.to_dict()), option) == "edges"
    assert getattr(ModelConfig.from_dict(ModelConfig().to_dict()), option) == default
    assert cfg == ModelConfig()  # a behaviour, not compared when weights are matched


def test_a_click_in_a_lesion_is_unlike_the_organ_around_it():
    rng = np.random.default_rng(2)
    organ, lesion = _ball(12.0), _ball(4.0)
    image = (20.0 + 100.0 * organ + 40.0 * lesion + rng.normal(0, 5, organ.shape)).astype(
        np.float32
    )
    centre = (15, 15, 15)
    assert click_like_inside(image, FULL, lesion, centre)
    assert not click_like_inside(image, FULL, organ, centre)  # 40 is 8 noise SDs off
    assert click_like_inside(image, FULL, organ, (15, 15, 24))  # a click in the organ itself
    # a mask that takes in some of the ring (the robust spread is not widened by it)
    grown = _ball(12.5)
    assert not click_like_inside(image, FULL, grown, centre)
    assert click_like_inside(image, FULL, organ, centre, sds=10.0)
    # the pick passes over the organ, unless every extent is unlike the click
    assert edge_pick([4.0, 1.0], [100.0, 40.0], [False, True]) == 1
    assert edge_pick([4.0, 1.0], [100.0, 40.0], [False, False]) == 0
    assert edge_pick([4.0, 1.0], [100.0, 40.0]) == 0


def test_a_lesion_is_unlike_the_tissue_right_around_it_in_a_brain_sized_mask():
    rng = np.random.default_rng(3)
    shape = (60, 40, 40)
    brain = np.zeros(shape, bool)
    brain[5:55, 5:35, 5:35] = True
    image = np.where(brain, 50.0, 0.0) + rng.normal(0, 3, shape)
    image[30:55, 5:35, 5:35] += 100.0  # two tissues: the brain's inside spans 50 to 150
    lesion = np.zeros(shape, bool)
    lesion[40:44, 18:22, 18:22] = True
    image[lesion] = 100.0 + rng.normal(0, 3, int(lesion.sum()))  # between the two
    whole = (slice(0, 60), slice(0, 40), slice(0, 40))
    click = (42, 20, 20)
    # the whole inside is like the click (its median lies between the tissues) ...
    assert click_like_inside(image, whole, brain, click, near=0)
    # ... the tissue around the lesion is not
    assert not click_like_inside(image, whole, brain, click)
    assert click_like_inside(image, whole, lesion, click)
    # a block placed by its slices: the same answers
    where = (slice(3, 58), slice(2, 38), slice(4, 36))
    assert not click_like_inside(image, where, brain[where], click)
    assert click_like_inside(image, where, lesion[where], click)
    # the cube around the click holds none of the mask: the whole inside decides
    far = np.zeros(shape, bool)
    far[5:12, 5:12, 5:12] = True
    assert click_like_inside(image, whole, far, (50, 30, 30), sds=100.0)
    with pytest.raises(ValueError, match="near must be >= 0"):
        click_like_inside(image, whole, brain, click, near=-1)


def test_click_like_inside_edge_cases_and_errors():
    image = np.full((10, 10, 10), 7.0, np.float32)
    mask = np.zeros((10, 10, 10), bool)
    whole = (slice(0, 10),) * 3
    assert click_like_inside(image, whole, mask, (5, 5, 5))  # nothing inside: no objection
    mask[2:8, 2:8, 2:8] = True
    assert click_like_inside(image, whole, mask, (0, 0, 0))  # constant: exactly alike
    image[0, 0, 0] = 9.0  # one voxel of the clipped 2x2x2 block: its median is still 7
    assert click_like_inside(image, whole, mask, (0, 0, 0))
    image[0, 0, 1] = image[0, 1, 0] = image[1, 0, 0] = image[1, 1, 1] = 9.0  # now most of it
    assert not click_like_inside(image, whole, mask, (0, 0, 0))  # spread 0, not alike
    with pytest.raises(ValueError, match="lies outside the image"):
        click_like_inside(image, whole, mask, (10, 0, 0))
    with pytest.raises(ValueError, match="sds must be > 0"):
        click_like_inside(image, whole, mask, (1, 1, 1), sds=0.0)
    with pytest.raises(ValueError, match="block has shape"):
        click_like_inside(image, whole, mask[1:], (1, 1, 1))
    with pytest.raises(ValueError, match="one strength"):
        edge_pick([1.0, 2.0], [1.0, 2.0], [True])


def test_the_mask_edge_score_is_the_edge_score_of_its_contrast_and_strength():
    image, mask = _image(), _ball(6.0)
    expected = edge_score(border_contrast(image, FULL, mask), edge_strength(image, FULL, mask))
    assert mask_edge_score(image, FULL, mask) == pytest.approx(expected) and expected > 0
    blur = _ball(10.0)  # cut through the flat surroundings
    assert mask_edge_score(image, FULL, blur) < 0.5 * expected
    assert mask_edge_score(image, FULL, np.zeros_like(mask)) == 0.0
    with pytest.raises(ValueError, match="block has shape"):
        mask_edge_score(image, FULL, mask[:5])


def test_a_later_click_is_refused_when_its_mask_keeps_too_little_of_the_edge_score():
    # positive clicks: refused below 0.7 of the score before; negative ones below 0.3
    assert later_click_refused(1.0, 0.69, True)
    assert not later_click_refused(1.0, 0.7, True)
    assert not later_click_refused(1.0, 0.69, False)
    assert later_click_refused(1.0, 0.29, False)
    assert not later_click_refused(1.0, 0.3, False)
    assert not later_click_refused(1.0, 5.0, True)  # sharper: taken
    assert not later_click_refused(0.0, 0.0, True)  # nothing to compare with: taken
    assert not later_click_refused(float("nan"), 0.0, True)
    assert later_click_refused(float("inf"), 1.0, False)
    with pytest.raises(ValueError, match="edge scores are >= 0"):
        later_click_refused(-1.0, 0.5, True)


@pytest.mark.parametrize("bad", ["Edges", "", None, 1, "model"])
def test_bad_later_checks_are_one_line_errors(bad):
    with pytest.raises(ValueError, match="later_check must be one of none, edges"):
        check_later_check(bad)
    with pytest.raises(ValueError, match="later_check must be one of"):
        ModelConfig(later_check=bad)


def test_click_inside_z_counts_robust_sds_from_the_inside_median():
    image = np.zeros((30, 30, 30), dtype=np.float32)
    mask = np.zeros(image.shape, dtype=bool)
    mask[:10, :10, :10] = True
    parity = np.indices((10, 10, 10)).sum(0) % 2
    image[:10, :10, :10] = 4.0 * parity  # 500 voxels at 0, 500 at 4: median 2, IQR 4
    image[19:22, 19:22, 19:22] = 10.0  # the click's 3x3x3 neighbourhood
    z = click_inside_z(image, FULL, mask, (20, 20, 20))
    assert z == pytest.approx(8.0 / (4.0 / 1.349))  # |10 - 2| / (IQR / 1.349) = 2.698
    # no inside voxel near the click: the whole inside alone decides
    assert click_inside_z(image, FULL, mask, (20, 20, 20), near=0) == pytest.approx(z)
    assert not click_like_inside(image, FULL, mask, (20, 20, 20))  # 2.698 > 2.5
    assert click_like_inside(image, FULL, mask, (20, 20, 20), sds=3.0)
    # a constant inside: 0 at its own intensity, infinitely far elsewhere
    flat = np.where(mask, 5.0, 0.0)
    assert click_inside_z(flat, FULL, mask, (5, 5, 5)) == 0.0
    assert click_inside_z(flat, FULL, mask, (20, 20, 20)) == float("inf")
    assert click_inside_z(image, FULL, np.zeros_like(mask), (20, 20, 20)) == 0.0
    with pytest.raises(ValueError, match="near must be >= 0 voxels, got -1"):
        click_inside_z(image, FULL, mask, (20, 20, 20), near=-1)


@pytest.mark.parametrize("shape", [(9, 7, 8), (1, 6, 5), (12, 2, 1), (30, 31, 29)])
def test_face_morphology_equals_scipy(shape):
    from scipy import ndimage

    from sammed3d.inference.contrast import face_dilation, face_erosion

    rng = np.random.default_rng(sum(shape))
    for density in (0.2, 0.6, 0.95, 1.0):
        mask = rng.random(shape) < density
        np.testing.assert_array_equal(face_erosion(mask), ndimage.binary_erosion(mask))
        for steps in (1, 2, 3):
            np.testing.assert_array_equal(
                face_dilation(mask, steps), ndimage.binary_dilation(mask, iterations=steps)
            )
    assert face_dilation(mask, 0) is not mask and np.array_equal(face_dilation(mask, 0), mask)


def test_neighbourhoods_span_the_finest_axis_voxels_and_as_many_mm_along_coarser_axes():
    from sammed3d.inference.contrast import axis_steps

    assert axis_steps(2, None) == (2, 2, 2)
    assert axis_steps(2, (1.5, 1.5, 1.5)) == (2, 2, 2)  # isotropic: the count as given
    assert axis_steps(1, (0.8, 0.8, 3.0)) == (1, 1, 0)  # 0.8 mm: no 3 mm slice above
    assert axis_steps(8, (0.8, 0.8, 3.0)) == (8, 8, 2)  # 6.4 mm: 2.13 slices
    assert axis_steps(1, (0.8, 0.8, 3.0), at_least=1) == (1, 1, 1)
    assert axis_steps(5, (1.0, 2.0, 1.0)) == (5, 3, 5)  # 2.5 rounds half up
    with pytest.raises(ValueError, match="spacing must be three positive numbers in mm"):
        axis_steps(1, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="steps must be >= 0 voxels, got -1"):
        axis_steps(-1, None)


def test_on_thick_slices_a_click_in_a_one_slice_lesion_is_like_the_lesion():
    # 0.8 x 0.8 x 3 mm: a lesion in one slice; a 3x3x3 block reached 3 mm above and below it,
    # into the tissue, and its mean was unlike the lesion (a CT trial's lesion got a 4-voxel
    # mask). With the spacing the block is 3x3x1.
    rng = np.random.default_rng(4)
    shape = (40, 40, 9)
    lesion = np.zeros(shape, bool)
    lesion[14:26, 14:26, 4] = True
    image = np.where(lesion, 300.0, 40.0) + rng.normal(0, 10, shape)
    whole = tuple(slice(0, n) for n in shape)
    spacing = (0.8, 0.8, 3.0)
    assert click_like_inside(image, whole, lesion, (20, 20, 4), spacing=spacing)
    assert not click_like_inside(image, whole, lesion, (20, 20, 4))  # as if isotropic
    # the tissue around it is unlike the clicked lesion, with the spacing too
    tissue = ~lesion
    assert not click_like_inside(image, whole, tissue, (20, 20, 4), spacing=spacing)
    # isotropic spacing of any size: the voxel counts as given
    for iso in ((1.0,) * 3, (1.5,) * 3):
        for c in ((20, 20, 4), (14, 14, 4), (5, 5, 5)):
            assert click_inside_z(image, whole, lesion, c, spacing=iso) == click_inside_z(
                image, whole, lesion, c
            )
        assert border_contrast(image, whole, lesion, spacing=iso) == border_contrast(
            image, whole, lesion
        )
        assert edge_strength(image, whole, lesion, spacing=iso) == edge_strength(
            image, whole, lesion
        )


def test_a_click_on_the_edge_of_a_lesion_is_like_the_lesion():
    # a click on the lesion's face: 18 of its 27 block voxels are the lesion's, 9 the organ's;
    # the block's mean lies between the two (unlike both), its median is the lesion's
    rng = np.random.default_rng(5)
    organ, lesion = _ball(12.0), np.zeros((30, 30, 30), bool)
    lesion[15:20, 15:20, 15:20] = True
    image = 20.0 + 100.0 * organ + 200.0 * lesion + rng.normal(0, 3, organ.shape)
    face = (15, 17, 17)
    assert click_like_inside(image, FULL, lesion, face)
    assert not click_like_inside(image, FULL, organ, face)
    values = image[14:17, 16:19, 16:19]
    assert click_inside_z(image, FULL, lesion, face, near=0) == pytest.approx(
        abs(np.median(values) - np.median(image[lesion]))
        / (np.subtract(*np.percentile(image[lesion], [75, 25])) / 1.349)
    )
    # a click on its corner (8 of 27 in the lesion): the median is the organ's
    assert click_like_inside(image, FULL, organ, (15, 15, 15))


def test_on_thick_slices_the_ring_and_window_reach_as_many_mm_along_each_axis():
    # a slab 2 slices thick at 3 mm, bright; 2 slices above and below it (6 mm) a dark layer
    # that a 2-voxel ring on 0.8 mm voxels (1.6 mm) should not reach along the slices
    shape = (30, 30, 12)
    slab = np.zeros(shape, bool)
    slab[8:22, 8:22, 5:7] = True
    rng = np.random.default_rng(6)
    image = np.where(slab, 200.0, 100.0) + rng.normal(0, 5, shape)
    image[:, :, 3] = image[:, :, 8] = 0.0  # 2 slices off the slab's faces
    whole = tuple(slice(0, n) for n in shape)
    spacing = (0.8, 0.8, 3.0)
    # isotropic reading: the ring reaches the dark layers, its spread (and so the contrast
    # and the edge's step) changes; with the spacing it stays in the tissue next to the slab
    aniso = border_contrast(image, whole, slab, spacing=spacing)
    assert aniso > border_contrast(image, whole, slab)
    from sammed3d.inference.contrast import _ring_dilation

    grown = _ring_dilation(slab, (2, 2, 1))
    # 2 voxels in-plane, 1 slice across: a voxel d_i, d_j, d_k steps off the slab's box joins
    # when d_i / 2 + d_j / 2 + d_k / 1 <= 1
    idx = np.indices(shape)
    off = [
        np.maximum(np.maximum(lo - x, x - hi + 1), 0)
        for x, lo, hi in zip(idx, (8, 8, 5), (22, 22, 7), strict=True)
    ]
    np.testing.assert_array_equal(grown, off[0] / 2 + off[1] / 2 + off[2] <= 1)
    assert grown[:, :, 3].sum() == 0 and grown[:, :, 8].sum() == 0
    assert grown[6, 15, 5] and not grown[6, 15, 4]  # 2 in-plane steps, or 1 slice: not both
    with pytest.raises(ValueError, match="spacing must be three positive numbers"):
        edge_strength(image, whole, slab, spacing=(0.8, 0.8))
