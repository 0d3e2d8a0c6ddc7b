"""Native <-> lattice <-> ROI maps: exact round trips, RAS tensor axes, torchio equivalence."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from sammed3d.data.transforms import crop_or_pad, resample, to_canonical
from sammed3d.inference.geometry import AxisMap, Lattice, union_roi
from sammed3d.io import Volume

GEOMETRY_NAMES = ["lps_aniso", "ras_stored", "oblique", "permuted_flipped"]


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_lattice_is_resample_then_canonical(lab, geometry):
    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    full = to_canonical(resample(vol, (1.5, 1.5, 1.5)))
    assert lattice.shape == full.shape
    np.testing.assert_allclose(lattice.grid.affine, full.affine, atol=1e-9)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_roi_resampling_equals_the_whole_volume_pipeline(lab, geometry):
    """Resampling only the ROI gives the published Resample -> ToCanonical -> CropOrPad."""
    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    full = to_canonical(resample(vol, (1.5, 1.5, 1.5)))
    for click in [(3, 30, 2), np.asarray(vol.shape) // 2, np.asarray(vol.shape) - 1]:
        roi = lattice.roi_at(click, 20)
        u = np.floor(lattice.native_to_lattice(np.asarray(click, float)) + 0.5)
        expected, box = crop_or_pad(full.array, u, 20)
        assert roi.start == box.start
        np.testing.assert_allclose(roi.resample_from_native(vol.array), expected, atol=1e-3)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_point_maps_round_trip_exactly(lab, geometry):
    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi_at((5, 7, 3), 16)
    rng = np.random.default_rng(0)
    pts = rng.uniform(-3, 40, size=(50, 3))
    np.testing.assert_allclose(roi.roi_to_native(roi.native_to_roi(pts)), pts, atol=1e-9)
    vox = np.indices(roi.size).reshape(3, -1).T.astype(float)
    np.testing.assert_allclose(roi.native_to_roi(roi.roi_to_native(vox)), vox, atol=1e-9)
    # ROI voxel <-> physical agrees with the lattice grid shifted by the ROI start
    phys = roi.grid.index_to_physical(vox)
    np.testing.assert_allclose(lattice.grid.index_to_physical(vox + roi.start), phys, atol=1e-9)
    np.testing.assert_allclose(vol.physical_to_index(phys), roi.roi_to_native(vox), atol=1e-9)
    # the separable map agrees with the matrix one, both ways
    amap = AxisMap.between(lattice.native, roi.grid)
    np.testing.assert_allclose(amap.apply(pts), roi.native_to_roi(pts), atol=1e-9)
    np.testing.assert_allclose(amap.inverse().apply(amap.apply(pts)), pts, atol=1e-9)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_roi_tensor_axes_are_ras(lab, geometry):
    """Along ROI axis 0/1/2 the RAS x/y/z coordinate grows fastest (published layout)."""
    vol, xyz = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi_at(np.asarray(vol.shape) // 2, 12)
    for axis in range(3):
        ras = xyz[..., axis] * (-1.0 if axis < 2 else 1.0)  # LPS -> RAS
        sampled = roi.resample_from_native(ras.astype(np.float32), zero_outside_lattice=False)
        centre = sampled[4:8, 4:8, 4:8]
        grads = [np.mean(np.diff(centre, axis=a)) for a in range(3)]
        assert int(np.argmax(grads)) == axis and grads[axis] > 0.5


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_click_lands_at_the_roi_centre_voxel(lab, geometry):
    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    click = np.array([20, 11, 9])
    roi = lattice.roi_at(click, 16)
    u = np.floor(lattice.native_to_lattice(click.astype(float)) + 0.5)
    np.testing.assert_array_equal(u - roi.start, [8, 8, 8])
    assert roi.contains_native(click[None])[0]
    assert tuple(roi.native_points_to_voxels(click[None].astype(float))[0]) == (8, 8, 8)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_paste_back_equals_simpleitk_nearest_resampling(lab, geometry):
    """The published paste-back is tio.Resample(original grid, nearest) of the ROI label."""
    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi_at((4, 30, 15), 24)
    rng = np.random.default_rng(2)
    roi_mask = (rng.random(roi.size) > 0.5).astype(np.uint8)
    slices, block = roi.paste_to_native(roi_mask)
    mine = np.zeros(vol.shape, np.uint8)
    mine[slices] = block

    image = sitk.GetImageFromArray(np.ascontiguousarray(roi_mask.transpose(2, 1, 0)))
    grid = roi.grid
    image.SetOrigin(grid.origin)
    image.SetSpacing(grid.spacing)
    image.SetDirection(tuple(grid.direction.ravel()))
    ref = sitk.Image(list(vol.shape), sitk.sitkUInt8)
    ref.SetOrigin(vol.origin)
    ref.SetSpacing(vol.spacing)
    ref.SetDirection(tuple(vol.direction.ravel()))
    out = sitk.Resample(image, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    expected = sitk.GetArrayFromImage(out).transpose(2, 1, 0)
    assert expected.sum() > 100
    # exact ties (a native voxel halfway between two ROI voxels) are decided by
    # floating-point noise in ITK; everywhere else the two must agree voxel for voxel
    r = roi.native_to_roi(np.indices(vol.shape).transpose(1, 2, 3, 0).astype(float))
    tie = np.any(np.abs(np.abs(r - np.floor(r)) - 0.5) < 1e-6, axis=-1)
    assert (~tie).mean() > 0.5
    np.testing.assert_array_equal(mine[~tie], expected[~tie])


def test_paste_of_a_roi_outside_the_image_is_empty(lab):
    vol, _ = lab.make_phantom("lps_aniso")
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi((500, 0, 0), 8)
    slices, block = roi.paste_to_native(np.ones(roi.size, bool))
    assert block.size == 0 and all(s.stop == s.start for s in slices)
    assert not roi.resample_from_native(vol.array).any()


def test_union_and_equality(lab):
    vol, _ = lab.make_phantom("oblique")
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    a, b = lattice.roi((0, 0, 0), 8), lattice.roi((4, -2, 1), 8)
    u = union_roi([a, b])
    assert u.start == (0, -2, 0) and u.size == (12, 10, 9)
    assert a.shifted((4, -2, 1)) == b and hash(a.shifted((4, -2, 1))) == hash(b)
    other = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    assert other.roi((0, 0, 0), 8) != a
    with pytest.raises(ValueError, match="different images"):
        union_roi([a, other.roi((0, 0, 0), 8)])


def test_only_the_native_block_under_the_roi_is_resampled(monkeypatch):
    from sammed3d.io import Volume

    vol = Volume(np.zeros((160, 150, 40), np.float32), (0.5, 0.5, 1.0))
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi_at((80, 75, 20), 16)  # 24 mm: 48 x 48 x 24 native voxels
    seen: list[tuple[int, ...]] = []
    original = sitk.GetImageFromArray

    def spy(arr, *args, **kwargs):
        seen.append(arr.shape)
        return original(arr, *args, **kwargs)

    monkeypatch.setattr(sitk, "GetImageFromArray", spy)
    roi.resample_from_native(vol.array)
    assert len(seen) == 1
    assert np.prod(seen[0]) <= 52 * 52 * 28 < vol.array.size / 12
    block = roi.native_block()
    # linear: the block as it lies in memory (axes reversed in the geometry instead)
    assert [s.stop - s.start for s in block] == list(seen[0])
    roi.resample_from_native(vol.array > 0, "nearest")
    assert [s.stop - s.start for s in block][::-1] == list(seen[1])  # nearest: transposed


@pytest.mark.parametrize("kind", ["oblique", "lps_aniso"])
def test_linear_resample_equals_simpleitk_on_the_transposed_block(lab, kind):
    # the reference: SimpleITK's usual layout (the native array transposed to k, j, i)
    vol, _ = lab.make_phantom(kind)
    array = np.random.default_rng(3).normal(size=vol.shape).astype(np.float32)
    lattice = Lattice.from_native(vol, (1.2, 1.5, 1.1))
    roi = lattice.roi((-3, 2, 1), (20, 17, 23))  # partly outside the lattice
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetOrigin(vol.origin)
    image.SetSpacing(vol.spacing)
    image.SetDirection(tuple(vol.direction.ravel()))
    grid = roi.grid
    ref = sitk.Resample(
        image,
        list(roi.size),
        sitk.Transform(),
        sitk.sitkLinear,
        tuple(grid.origin),
        tuple(grid.spacing),
        tuple(grid.direction.ravel()),
        0.0,
        sitk.sitkFloat32,
    )
    expected = sitk.GetArrayFromImage(ref).transpose(2, 1, 0)
    mine = roi.resample_from_native(array, zero_outside_lattice=False)
    assert mine.flags.c_contiguous and mine.dtype == np.float32
    # float32 rounding only (the reference reads the whole image, not the block)
    np.testing.assert_allclose(mine, expected, rtol=0, atol=1e-6)
    padded = roi.resample_from_native(array)  # the part outside the lattice is zeroed
    outside = np.ones(roi.size, bool)
    outside[roi.valid] = False
    assert outside.any() and not padded[outside].any()
    np.testing.assert_array_equal(padded[~outside], mine[~outside])


def test_paste_within_a_box_gives_the_same_native_mask(lab):
    vol, _ = lab.make_phantom("oblique")
    lattice = Lattice.from_native(vol, (1.5, 1.5, 1.5))
    roi = lattice.roi_at(np.asarray(vol.shape) / 2, 16)
    mask = np.zeros(roi.size, bool)
    mask[3:9, 5:7, 2:12] = True
    mask[4, 6, 3] = False
    whole = np.zeros(vol.shape, bool)
    part = np.zeros(vol.shape, bool)
    slices, block = roi.paste_to_native(mask)
    whole[slices] = block
    small, sub = roi.paste_to_native(mask, within=(slice(3, 9), slice(5, 7), slice(2, 12)))
    part[small] = sub
    assert whole.any() and np.array_equal(part, whole)
    assert sub.size < block.size / 10
    for bad in (
        (slice(3, 9), slice(5, 7)),
        (slice(3, 3), slice(5, 7), slice(2, 12)),
        (slice(3, 9, 2), slice(5, 7), slice(2, 12)),
    ):
        with pytest.raises(ValueError, match="within must be"):
            roi.paste_to_native(mask, within=bad)


@pytest.mark.parametrize("geometry", GEOMETRY_NAMES)
def test_a_roi_on_the_native_voxels_is_copied_as_resampling_would_give(lab, geometry, monkeypatch):
    """At the image's own spacing (a 1 mm zoom ROI of a 1 mm image) each ROI voxel is a native
    voxel, whatever the axis order and flips: the values are copied, equal to SimpleITK's
    linear and nearest resampling, 0 outside the image."""
    from sammed3d.inference.geometry import RoiGrid

    vol, _ = lab.make_phantom(geometry)
    lattice = Lattice.from_native(vol, vol.spacing)
    labels = (vol.array > 104).astype(np.int16)
    corners = [(0, 0, 0), np.asarray(vol.shape) // 2, np.asarray(vol.shape) - 1, (2, 40, 1)]
    for click in corners:
        roi = lattice.roi_at(click, 24)
        assert roi._copy_from_native(vol.array, np.dtype(np.float32)) is not None
        for array, how in ((vol.array, "linear"), (labels, "nearest")):
            out_dtype = np.float32 if how == "linear" else array.dtype
            expected = roi._resample_block(array, how, out_dtype)
            copied = roi.resample_from_native(array, how, zero_outside_lattice=False)
            assert copied.dtype == expected.dtype and copied.shape == roi.size
            np.testing.assert_allclose(copied, expected, rtol=1e-6, atol=0)
    # a ROI wholly outside the image is zeros; an off-voxel lattice is resampled
    far = RoiGrid(lattice, tuple(int(n) + 50 for n in lattice.shape), (8, 8, 8))
    assert not far.resample_from_native(vol.array, zero_outside_lattice=False).any()
    finer = Lattice.from_native(vol, tuple(0.5 * s for s in vol.spacing)).roi_at((3, 3, 3), 8)
    assert finer._copy_from_native(vol.array, np.dtype(np.float32)) is None


@pytest.mark.parametrize(
    ("exact", "noisy"),
    [
        (2.5, 2.49999999),  # a DICOM series' slice spacing from positions (2.499999993)
        (2.5, 2.50000001),
        (0.9, float(np.float32(0.9))),  # a NIfTI pixdim is float32: 0.8999999762
    ],
)
def test_one_scan_gives_one_lattice_whatever_its_file_says_of_the_spacing(exact, noisy):
    """The same scan read from two formats differs in its spacing's last digits; the lattice,
    the ROI of a click and the pasted mask must not (2026-12-03: 60 slices of 2.49999999 mm
    gave a 99-voxel lattice axis against 100, and a mask 4 % different)."""
    rng = np.random.default_rng(5)
    shape = (40, 36, 60)
    grids = []
    for s in (exact, noisy):
        vol = Volume(
            np.zeros(shape, np.float32), (0.78, 0.78 * s / exact, s), (-100.0, -120.0, -400.0)
        )
        grids.append(Lattice.from_native(vol, (1.5, 1.5, 1.5)))
    a, b = grids
    assert a.shape == b.shape
    np.testing.assert_allclose(a.grid.origin, b.grid.origin, atol=1e-5)
    roi_a, roi_b = a.roi_at((20, 18, 30), 32), b.roi_at((20, 18, 30), 32)
    assert roi_a.start == roi_b.start
    tile = rng.random((32, 32, 32)) > 0.5
    (sa, pa), (sb, pb) = roi_a.paste_to_native(tile), roi_b.paste_to_native(tile)
    assert sa == sb
    np.testing.assert_array_equal(pa, pb)
