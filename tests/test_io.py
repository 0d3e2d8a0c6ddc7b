"""``sammed3d.io``: the one reader refuses corrupt input; geometry out = geometry in, exactly."""

from __future__ import annotations

import errno
import gzip
import os
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from sammed3d._wording import cli_wording
from sammed3d.io import (
    Volume,
    VolumeError,
    atomic_write_text,
    check_output_file,
    read_volume,
    write_volume,
)
from sammed3d.nifti import NIFTI_GEOMETRY_FIELDS
from tests.volumes import (
    GEOMETRIES,
    ORIGIN,
    UID_ROOT,
    image_array,
    nrrd_vectors,
    read_text_header,
    write_dicom_series,
    write_mha,
    write_not_volume,
    write_nrrd,
)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def _volume(geometry: str = "oblique", array: np.ndarray | None = None) -> Volume:
    direction, spacing = GEOMETRIES[geometry]
    return Volume(image_array() if array is None else array, spacing, ORIGIN, direction)


# ------------------------------------------------------------------------------------------
# corrupt input is refused, in every format


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("compress", [False, True])
def test_truncated_files_are_refused(tmp_path: Path, suffix: str, compress: bool) -> None:
    full = tmp_path / f"full{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(image_array()), str(full), useCompression=compress)
    raw = full.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match="cannot read") as info:
        read_volume(cut)
    assert "\n" not in str(info.value)
    assert "trunc" in str(info.value) or "corrupt" in str(info.value)


def test_nifti_with_corrupt_gzip_data_is_refused(tmp_path: Path) -> None:
    good = tmp_path / "good.nii"
    nib.save(nib.Nifti1Image(image_array(), np.eye(4)), good)
    raw = bytearray(gzip.compress(good.read_bytes()))
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # damage inside the deflate stream
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(VolumeError, match="cannot read"):
        read_volume(bad)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz", ".nrrd", ".mha"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_voxels_are_refused_in_every_format(
    tmp_path: Path, suffix: str, bad: float
) -> None:
    arr = image_array()
    arr[3, 4, 5] = bad
    path = tmp_path / f"x{suffix}"
    if suffix.startswith(".nii"):  # nibabel: SimpleITK would read NaN back as 0
        nib.save(nib.Nifti1Image(arr, np.eye(4)), path)
    else:
        write_volume(Volume(arr), path)
    with pytest.raises(VolumeError, match="NaN" if np.isnan(bad) else "infinite"):
        read_volume(path)


def _nifti_bytes_with_pixdim(arr: np.ndarray, pixdim: tuple[float, float, float]) -> bytes:
    """A NIfTI file whose header has the given pixdim and qform_code 1 (nibabel fixes
    zero pixdims when saving, so the header is patched in the bytes)."""
    img = nib.Nifti1Image(arr, np.eye(4))
    img.header.set_qform(np.eye(4), code=1)
    img.header.set_sform(None, code=0)
    raw = bytearray(img.to_bytes())
    # pixdim: float32[8] at byte 76
    values = np.frombuffer(bytes(raw[76:108]), dtype="<f4").copy()
    values[1:4] = pixdim
    raw[76:108] = values.astype("<f4").tobytes()
    return bytes(raw)


def test_zero_voxel_size_is_refused_in_every_format(tmp_path: Path) -> None:
    arr = image_array()
    nii = tmp_path / "zero.nii"
    nii.write_bytes(_nifti_bytes_with_pixdim(arr, (1.0, 0.0, 2.0)))
    nrrd = write_nrrd(tmp_path / "zero.nrrd", arr, np.diag([1.0, 0.0, 2.0]), (0, 0, 0))
    mha = write_mha(tmp_path / "zero.mha", arr, np.eye(3), (1.0, 0.0, 2.0), (0, 0, 0))
    for path in (nii, nrrd, mha):
        with pytest.raises(VolumeError, match="zero") as info:
            read_volume(path)
        assert "\n" not in str(info.value), path


@pytest.mark.parametrize("size", [1000.0, 1e-4])
def test_implausible_voxel_sizes_are_refused(tmp_path: Path, size: float) -> None:
    arr = image_array()
    spacing = (1.0, size, 1.0)
    paths = [
        write_nrrd(tmp_path / "s.nrrd", arr, np.diag(spacing), (0, 0, 0)),
        write_mha(tmp_path / "s.mha", arr, np.eye(3), spacing, (0, 0, 0)),
    ]
    nib.save(nib.Nifti1Image(arr, np.diag([*spacing, 1.0])), tmp_path / "s.nii.gz")
    paths.append(tmp_path / "s.nii.gz")
    for path in paths:
        with pytest.raises(VolumeError, match="plausible range") as info:
            read_volume(path)
        assert str(path) in str(info.value)
    with pytest.raises(VolumeError, match="plausible range"):
        Volume(arr, spacing)  # arrays given to the API: the same rule
    with pytest.raises(VolumeError, match="plausible range"):
        Volume.from_affine(arr, np.diag([*spacing, 1.0]))


def test_sheared_or_vector_nifti_is_refused(tmp_path: Path) -> None:
    shear = np.eye(4)
    shear[0, 1] = 0.5
    img = nib.Nifti1Image(image_array(), shear)
    img.set_qform(None, code=0)
    nib.save(img, tmp_path / "shear.nii.gz")
    with pytest.raises(VolumeError, match="sheared"):
        read_volume(tmp_path / "shear.nii.gz")
    # with a valid qform the qform is used (as ITK does), with a warning
    img.set_qform(np.diag([1.0, 1.0, 1.0, 1.0]), code=1)
    nib.save(img, tmp_path / "shear_q.nii.gz")
    assert read_volume(tmp_path / "shear_q.nii.gz").spacing == (1.0, 1.0, 1.0)
    vec = nib.Nifti1Image(np.zeros((8, 9, 10, 1, 3), np.float32), np.eye(4))
    nib.save(vec, tmp_path / "vec.nii.gz")
    with pytest.raises(VolumeError, match="3 components"):
        read_volume(tmp_path / "vec.nii.gz")


# ------------------------------------------------------------------------------------------
# geometry: the NIfTI world matrix other tools use, and header fields kept exactly


def _registered_nifti(path: Path, array: np.ndarray) -> nib.Nifti1Image:
    """sform (code 4, registered) and a qform 13 mm away (code 1): the FSL/registration case."""
    qform = np.array(
        [[0.0, -0.9, 0.0, 40.0], [1.2, 0.0, 0.0, -60.0], [0.0, 0.0, 2.5, -20.0], [0, 0, 0, 1]]
    )
    sform = qform.copy()
    sform[:3, 3] += (5.0, -12.0, 0.0)
    img = nib.Nifti1Image(array, None)
    img.set_qform(qform, code=1)
    img.set_sform(sform, code=4)
    img.header.set_xyzt_units("mm", "sec")
    nib.save(img, path)
    return nib.load(path)


def test_nifti_geometry_is_the_sform_and_both_forms_survive_a_write(tmp_path: Path) -> None:
    src = _registered_nifti(tmp_path / "reg.nii.gz", image_array())
    volume = read_volume(tmp_path / "reg.nii.gz")
    np.testing.assert_allclose(volume.affine, src.affine, atol=1e-5)  # nibabel/FSL/Slicer
    labels = (volume.array > 300).astype(np.uint8)
    for name in ("labels.nii.gz", "labels.nii"):
        write_volume(volume.with_array(labels), tmp_path / name)
        out = nib.load(tmp_path / name)
        for key in NIFTI_GEOMETRY_FIELDS:
            assert out.header[key].tobytes() == src.header[key].tobytes(), key
        assert out.header["pixdim"][:4].tobytes() == src.header["pixdim"][:4].tobytes()
        assert out.header.get_sform(coded=True)[1] == 4
        assert out.header.get_qform(coded=True)[1] == 1
        np.testing.assert_array_equal(np.asanyarray(out.dataobj), labels)
        assert out.get_data_dtype() == np.uint8


def test_nifti_in_micrometres_is_read_in_millimetres(tmp_path: Path) -> None:
    img = nib.Nifti1Image(image_array(), np.diag([800.0, 900.0, 2500.0, 1.0]))
    img.header.set_xyzt_units("micron")
    nib.save(img, tmp_path / "um.nii.gz")
    assert read_volume(tmp_path / "um.nii.gz").spacing == pytest.approx((0.8, 0.9, 2.5))


def _dicom_volume(tmp_path: Path, geometry: str) -> tuple[Path, np.ndarray, np.ndarray]:
    """A DICOM series of the geometry; returns the folder and its expected RAS affine."""
    direction, spacing = GEOMETRIES[geometry]
    direction = direction.copy()
    if np.linalg.det(direction) < 0:  # DICOM's third axis is row x column
        direction[:, 2] *= -1
    folder = tmp_path / f"dicom_{geometry}"
    _, data = write_dicom_series(
        folder,
        n=6,
        dz=spacing[2],
        rotation=direction,
        pixel_spacing=(spacing[1], spacing[0]),
        origin=ORIGIN,
    )
    lps = np.eye(4)
    lps[:3, :3] = direction @ np.diag(spacing)
    lps[:3, 3] = ORIGIN
    return folder, np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps, data


def _source(tmp_path: Path, fmt: str, geometry: str) -> Path:
    direction, spacing = GEOMETRIES[geometry]
    vol = _volume(geometry)
    if fmt == "nifti":
        path = tmp_path / f"in_{geometry}.nii.gz"
        img = nib.Nifti1Image(vol.array, vol.affine)
        img.set_qform(vol.affine, code=1)
        img.set_sform(vol.affine, code=2)
        nib.save(img, path)
        return path
    if fmt == "nrrd_lps":
        cols = direction @ np.diag(spacing)
        return write_nrrd(tmp_path / f"in_{geometry}.nrrd", vol.array, cols, ORIGIN)
    if fmt == "nrrd_ras":
        cols = LPS_TO_RAS @ direction @ np.diag(spacing)
        origin = LPS_TO_RAS @ np.asarray(ORIGIN)
        path = tmp_path / f"in_{geometry}_ras.nrrd"
        return write_nrrd(path, vol.array, cols, origin, space="right-anterior-superior")
    if fmt == "mha":
        return write_mha(tmp_path / f"in_{geometry}.mha", vol.array, direction, spacing, ORIGIN)
    return _dicom_volume(tmp_path, geometry)[0]


def _position_fields(path: Path) -> dict[str, object]:
    """The header fields that define where the voxels are, as stored (parsed numbers)."""
    if path.name.endswith((".nii", ".nii.gz")):
        hdr = nib.load(path).header
        fields: dict[str, object] = {k: hdr[k].tobytes() for k in NIFTI_GEOMETRY_FIELDS}
        fields["pixdim"] = hdr["pixdim"][:4].tobytes()
        return fields
    head = read_text_header(path)
    if path.suffix == ".nrrd":
        return {
            "space": head["space"],
            "space directions": nrrd_vectors(head["space directions"]).tobytes(),
            "space origin": nrrd_vectors(head["space origin"]).tobytes(),
        }
    return {
        k: np.array([float(v) for v in head[k].split()]).tobytes()
        for k in ("TransformMatrix", "Offset", "ElementSpacing")
    }


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
@pytest.mark.parametrize("fmt", ["nifti", "nrrd_lps", "nrrd_ras", "mha", "dicom"])
def test_round_trip_keeps_position_fields(tmp_path: Path, fmt: str, geometry: str) -> None:
    src = _source(tmp_path, fmt, geometry)
    volume = read_volume(src)
    labels = volume.with_array((volume.array > volume.array.mean()).astype(np.uint8))
    for out_suffix in (".nii.gz", ".nrrd", ".mha"):
        out = write_volume(labels, tmp_path / f"out{out_suffix}")
        back = read_volume(out)
        np.testing.assert_array_equal(back.array, labels.array)
        # the geometry is the same (float32 in NIfTI, exact doubles elsewhere)
        tol = 1e-5 if out_suffix == ".nii.gz" else 1e-12
        np.testing.assert_allclose(back.affine, volume.affine, rtol=0, atol=tol)
        same_format = (fmt == "nifti" and out_suffix == ".nii.gz") or (
            fmt.startswith("nrrd") and out_suffix == ".nrrd"
        )
        if same_format or (fmt == "mha" and out_suffix == ".mha"):
            assert _position_fields(out) == _position_fields(src), out_suffix
    if fmt == "dicom":
        _, expected, _ = _dicom_volume(tmp_path / "again", geometry)
        np.testing.assert_allclose(volume.affine, expected, atol=1e-5)


def test_a_changed_grid_drops_the_source_header(tmp_path: Path) -> None:
    src = _registered_nifti(tmp_path / "reg.nii.gz", image_array())
    volume = read_volume(tmp_path / "reg.nii.gz")
    moved = Volume(volume.array, (2.0, 2.0, 2.0), volume.origin, volume.direction)
    moved.header = volume.header  # stale: describes another grid
    write_volume(moved, tmp_path / "moved.nii.gz")
    back = read_volume(tmp_path / "moved.nii.gz")
    assert back.spacing == pytest.approx((2.0, 2.0, 2.0))
    assert not np.allclose(back.affine, src.affine)


# ------------------------------------------------------------------------------------------
# DICOM series


def test_regular_dicom_series_reads_on_the_true_positions(tmp_path: Path) -> None:
    files, data = write_dicom_series(tmp_path / "s", n=10, dz=2.5)
    vol = read_volume(tmp_path / "s")
    assert vol.shape == (18, 16, 10) and vol.spacing == pytest.approx((0.9, 0.7, 2.5))
    np.testing.assert_array_equal(vol.array, data.transpose(2, 1, 0))


@pytest.mark.parametrize("missing", [[13], [5, 6, 7, 8, 9]])
def test_dicom_series_with_missing_slices_is_refused_naming_the_gap(
    tmp_path: Path, missing: list[int]
) -> None:
    files, _ = write_dicom_series(tmp_path / "s", n=40, dz=2.5)
    for k in missing:
        files[k].unlink()
    with pytest.raises(VolumeError, match="not evenly spaced") as info:
        read_volume(tmp_path / "s")
    msg = str(info.value)
    assert "\n" not in msg
    assert f"between IM{missing[0] - 1:04d}.dcm and IM{missing[-1] + 1:04d}.dcm" in msg
    assert f"{len(missing)} slice(s) missing?" in msg
    assert "--irregular-slices resample" in msg


def test_dicom_series_with_a_corrupt_slice_is_refused_naming_it(tmp_path: Path) -> None:
    files, _ = write_dicom_series(tmp_path / "s", n=20, dz=2.5)
    files[7].write_bytes(os.urandom(3000))
    with pytest.raises(VolumeError, match="not evenly spaced") as info:
        read_volume(tmp_path / "s")
    assert "IM0007.dcm" in str(info.value)
    raw = files[9].read_bytes()
    files[9].write_bytes(raw[: len(raw) - 200])  # header intact, pixel data cut
    with pytest.raises(VolumeError):
        read_volume(tmp_path / "s")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"positions": [0, 2.5, 5, 7.5, 11.0, 13.5, 16.0, 18.5]}, "not evenly spaced"),
        ({"positions": [0, 2.5, 5, 5, 7.5, 10]}, "same position"),
        ({"tilt": 0.2}, "gantry tilt"),
    ],
)
def test_every_irregular_series_is_refused(tmp_path: Path, kwargs: dict, match: str) -> None:
    write_dicom_series(tmp_path / "s", **kwargs)
    with pytest.raises(VolumeError, match=match):
        read_volume(tmp_path / "s")


def test_slices_of_other_orientation_or_size_are_refused(tmp_path: Path) -> None:
    write_dicom_series(tmp_path / "s", n=6)
    rot = GEOMETRIES["oblique"][0]
    write_dicom_series(tmp_path / "t", n=2, rotation=rot, uid=f"{UID_ROOT}.77", seed=1)
    (tmp_path / "t" / "IM0001.dcm").rename(tmp_path / "s" / "OTHER.dcm")
    with pytest.raises(VolumeError, match="different orientations"):
        read_volume(tmp_path / "s")
    (tmp_path / "s" / "OTHER.dcm").unlink()
    write_dicom_series(tmp_path / "u", positions=[100.0], shape=(20, 18), uid=f"{UID_ROOT}.77")
    (tmp_path / "u" / "IM0000.dcm").rename(tmp_path / "s" / "BIG.dcm")
    with pytest.raises(VolumeError, match="different sizes"):
        read_volume(tmp_path / "s")


def test_irregular_series_can_be_read_onto_its_true_positions(tmp_path: Path) -> None:
    files, data = write_dicom_series(tmp_path / "s", n=12, dz=2.5)
    files[4].unlink()
    files[5].unlink()
    full = read_volume(tmp_path / "s", irregular_slices="resample")
    assert full.shape == (18, 16, 12)
    assert full.spacing[2] == pytest.approx(2.5)
    kept = [k for k in range(12) if k not in (4, 5)]
    for k in kept:  # acquired slices sit exactly where they were recorded
        np.testing.assert_allclose(full.array[:, :, k], data[k].T, atol=1e-3)
    expected_4 = data[3] + (data[6].astype(np.float32) - data[3]) / 3
    np.testing.assert_allclose(full.array[:, :, 4], expected_4.T, atol=1e-3)
    np.testing.assert_allclose(full.origin, (-20.0, -30.0, 10.0), atol=1e-6)


# ------------------------------------------------------------------------------------------
# writing: modes, overwrite rule, writability


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        paths = [
            write_volume(_volume(), tmp_path / "a.nii.gz"),
            write_volume(_volume(), tmp_path / "a.nrrd"),
            atomic_write_text(tmp_path / "a.txt", "x"),
        ]
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_output_checks(tmp_path: Path) -> None:
    src = write_volume(_volume(), tmp_path / "in.nii.gz")
    with pytest.raises(VolumeError, match="input"):
        check_output_file(src, overwrite=True, protect=(src,))
    with pytest.raises(FileExistsError) as exists:
        check_output_file(src)
    # worded for a Python caller; the command line prints its own spelling of the advice
    assert str(exists.value) == f"output {src} exists; pass overwrite=True to replace it"
    assert cli_wording(exists.value) == f"output {src} exists; pass --overwrite to replace it"
    check_output_file(src, overwrite=True)
    check_output_file(tmp_path / "new" / "deeper" / "out.nii.gz")
    assert not (tmp_path / "new").exists()  # nothing created
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file"):
        check_output_file(tmp_path / "file" / "out.nii.gz")
    with pytest.raises(IsADirectoryError):
        check_output_file(tmp_path, overwrite=True)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_named(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(PermissionError, match=str(ro / "out.nii.gz")):
            check_output_file(ro / "out.nii.gz")
        with pytest.raises(PermissionError, match=str(ro / "out.nii.gz")) as info:
            write_volume(_volume(), ro / "out.nii.gz")
        assert ".out.nii.gz." not in str(info.value)  # never the internal temp file
    finally:
        ro.chmod(0o755)


def test_failed_write_names_the_users_path(tmp_path: Path, monkeypatch) -> None:
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.nii.gz.x1y2"))

    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as info:
        write_volume(_volume(), tmp_path / "out.nii.gz")
    assert str(tmp_path / "out.nii.gz") in str(info.value)
    assert ".x1y2" not in str(info.value)


@pytest.mark.parametrize(
    ("code", "refused", "words"),
    [
        (errno.ENOENT, True, "does not accept new files"),  # in an existing folder: /proc
        (errno.EROFS, True, "read-only file system"),
        (errno.EPERM, True, "operation not permitted"),
        (errno.ENOSPC, False, "no space left on device"),  # the machine, not the input
        (errno.EIO, False, "input/output error"),
    ],
)
def test_a_folder_that_refuses_new_files_is_bad_input_a_full_disk_is_not(
    tmp_path: Path, monkeypatch, code: int, refused: bool, words: str
) -> None:
    """Output checks and writes raise PermissionError (CLI exit 2) for a folder that does not
    take files, and a plain OSError (exit 1) for a failing machine; both name the user's path."""
    import tempfile

    from sammed3d.io import check_output_file

    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(tmp_path / ".tmp123"))

    monkeypatch.setattr(tempfile, "mkstemp", fail)
    target = tmp_path / "out.nii.gz"
    for attempt in (lambda: check_output_file(target), lambda: write_volume(_volume(), target)):
        with pytest.raises(OSError) as info:
            attempt()
        assert isinstance(info.value, PermissionError) is refused
        assert info.value.errno == code
        assert str(target) in str(info.value) and words in str(info.value).lower()
        assert ".tmp123" not in str(info.value) and "[Errno" not in str(info.value)


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_output_in_proc_is_refused_before_the_work(tmp_path: Path) -> None:
    from sammed3d.io import check_output_file

    with pytest.raises(PermissionError, match=r"cannot write /proc/out\.nii\.gz: .*choose"):
        check_output_file("/proc/out.nii.gz")


def test_volume_and_grid_share_one_index_physical_map() -> None:
    """`Volume` and `inference.geometry.Grid` use the one implementation in `io.PhysicalGrid`:
    same affine, same maps, and the RAS affine agrees with nibabel's convention (x, y negated)."""
    from sammed3d.inference.geometry import Grid
    from sammed3d.io import LPS_TO_RAS, PhysicalGrid

    theta = 0.3
    direction = np.array(
        [[np.cos(theta), -np.sin(theta), 0.0], [np.sin(theta), np.cos(theta), 0.0], [0, 0, -1.0]]
    )
    vol = Volume(np.zeros((4, 5, 6)), (0.5, 1.25, 3.0), (10.0, -20.0, 5.0), direction)
    grid = Grid.of(vol)
    assert isinstance(vol, PhysicalGrid) and isinstance(grid, PhysicalGrid)
    np.testing.assert_allclose(grid.affine, vol.affine)
    ijk = np.array([[0.0, 0.0, 0.0], [3.0, 4.0, 5.0], [1.5, -2.0, 0.25]])
    lps = vol.index_to_physical(ijk)
    np.testing.assert_allclose(grid.index_to_physical(ijk), lps)
    # voxel (0, 0, 0) is the origin; one step along k moves 3 mm along the third column
    np.testing.assert_allclose(lps[0], [10.0, -20.0, 5.0])
    np.testing.assert_allclose(
        vol.index_to_physical([0, 0, 1]) - lps[0], 3.0 * direction[:, 2], atol=1e-12
    )
    np.testing.assert_allclose(vol.physical_to_index(lps), ijk, atol=1e-12)
    # the RAS affine is the LPS map with x and y negated
    ras = np.c_[ijk, np.ones(3)] @ vol.affine.T
    np.testing.assert_allclose(ras[:, :3], lps @ LPS_TO_RAS.T, atol=1e-12)
    np.testing.assert_allclose(ras[1, :2], -lps[1, :2])


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
def test_a_4d_file_of_one_volume_is_that_volume_and_of_more_an_error(tmp_path, suffix):
    """Some tools write a 3-D result with a last axis of length 1: it is the volume; a
    series of several volumes is refused naming its size (module docstring)."""
    rng = np.random.default_rng(3)
    one = rng.random((10, 11, 12, 1)).astype(np.float32)
    two = rng.random((10, 11, 12, 2)).astype(np.float32)
    paths = []
    for name, data in (("one", one), ("two", two)):
        path = tmp_path / f"{name}{suffix}"
        if suffix == ".nii.gz":
            nib.save(nib.Nifti1Image(data, np.diag([1.5, 1.5, 2.0, 1.0])), path)
        else:  # ITK: a 4-D image, the 4th axis fastest in its array order (t, z, y, x)
            image = sitk.GetImageFromArray(np.transpose(data, (3, 2, 1, 0)), isVector=False)
            sitk.WriteImage(image, str(path))
        paths.append(path)
    volume = read_volume(paths[0])
    assert volume.shape == (10, 11, 12)
    np.testing.assert_array_equal(np.asarray(volume.array), one[..., 0])
    with pytest.raises(VolumeError, match=r"expected a 3-D volume, got a 4-D image of size"):
        read_volume(paths[1])


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize(
    ("dtype", "slope", "inter", "expected"),
    [
        (np.int16, 2.0, -1024.0, np.float32),  # a CT stored with an offset (dcm2niix)
        (np.uint8, 0.5, 10.0, np.float32),
        (np.int32, 3.0, 0.0, np.float64),  # a wider raw type keeps its precision
        (np.int16, 0.0, 5.0, np.int16),  # slope 0: no scaling (NIfTI-1)
    ],
)
def test_nifti_scale_factors_are_applied_as_itk_applies_them(
    tmp_path, suffix, dtype, slope, inter, expected
):
    """nibabel moves scl_slope/scl_inter off the loaded header: the reader must still apply
    them (a CT with scl_inter -1024 read raw is off by 1024 HU)."""
    raw = (np.arange(6 * 7 * 8) % 200).astype(dtype).reshape(6, 7, 8)
    img = nib.Nifti1Image(raw, np.diag([0.8, 0.8, 2.0, 1.0]))
    img.header["scl_slope"], img.header["scl_inter"] = slope, inter  # as stored on disk
    path = tmp_path / f"scaled{suffix}"
    nib.save(img, path)
    volume = read_volume(path)
    values = np.asarray(volume.array)
    assert values.dtype == expected
    want = raw.astype(np.float64) * slope + inter if slope else raw
    np.testing.assert_allclose(values, want, rtol=1e-6)
    if slope:  # ITK also adds scl_inter when scl_slope is 0; the standard (and nibabel) not
        itk = sitk.GetArrayFromImage(sitk.ReadImage(str(path))).transpose(2, 1, 0)
        np.testing.assert_allclose(values, itk, rtol=1e-6)  # what ITK-based tools read


@pytest.mark.parametrize("name", ["adir/", "folder"])
def test_an_output_that_is_a_folder_is_named_as_given(tmp_path, name: str) -> None:
    """``-o adir/`` was "cannot write '': ..." (the empty base name of the path)."""
    from sammed3d.io import check_volume_name

    (tmp_path / "folder").mkdir()
    given = f"{tmp_path}/{name}"  # "adir/" does not exist: its slash makes it a folder
    with pytest.raises(VolumeError, match="^cannot write '.+': it is a folder; give a file name"):
        check_volume_name(given)
    with pytest.raises(VolumeError, match=r"^cannot write '.+x\.png': the output must end in"):
        check_volume_name(tmp_path / "x.png")
    check_volume_name(tmp_path / "ok.nii.gz")


@pytest.mark.parametrize(
    ("written", "named", "says"),
    [
        (
            "x.nii.gz",
            "a.nrrd",
            "it holds gzip-compressed NIfTI data, not NRRD: rename it to end in .nii.gz",
        ),
        (
            "x.nii.gz",
            "a.mha",
            "it holds gzip-compressed NIfTI data, not MetaImage: rename it to end in .nii.gz",
        ),
        (
            "x.nii",
            "b.nii.gz",
            "it holds NIfTI data, not gzip-compressed NIfTI: rename it to end in .nii",
        ),
        (
            "x.nii.gz",
            "c.nii",
            "it holds gzip-compressed NIfTI data, not NIfTI: rename it to end in .nii.gz",
        ),
        (
            "x.nrrd",
            "d.nii.gz",
            "it holds NRRD data, not gzip-compressed NIfTI: rename it to end in .nrrd",
        ),
        ("x.mha", "e.nrrd", "it holds MetaImage data, not NRRD: rename it to end in .mha"),
        ("x.nrrd", "f.mha", "it holds NRRD data, not MetaImage: rename it to end in .nrrd"),
    ],
)
def test_a_file_named_as_another_format_is_named_for_what_it_holds(tmp_path, written, named, says):
    """2026-12-03 trial: a NIfTI renamed .nrrd gave SimpleITK's 'Unable to determine ImageIO
    reader'; an uncompressed NIfTI named .nii.gz gave 'not a gzip file'."""
    import shutil

    vol = Volume(np.random.default_rng(0).random((10, 11, 12)).astype(np.float32), (1, 1, 2))
    src = write_volume(vol, tmp_path / written)
    shutil.copy(src, tmp_path / named)
    with pytest.raises(VolumeError) as info:
        read_volume(tmp_path / named)
    assert str(info.value) == f"cannot read {tmp_path / named}: {says}"


def test_an_html_page_named_as_an_image_is_called_one(tmp_path):
    page = tmp_path / "scan.nii.gz"
    page.write_bytes(b"<!DOCTYPE html><html><title>Quota exceeded</title></html>")
    with pytest.raises(VolumeError, match="it is an HTML page, not gzip-compressed NIfTI"):
        read_volume(page)
    junk = tmp_path / "junk.nrrd"  # the right format, broken: the reader's own reason
    junk.write_bytes(b"NRRD0004\ngarbage\n")
    with pytest.raises(VolumeError) as info:
        read_volume(junk)
    assert "rename" not in str(info.value)


READS = (
    "sammed3d reads 3-D volumes (NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, MetaImage .mha/.mhd, "
    "a DICOM series)"
)


@pytest.mark.parametrize(
    ("kind", "named", "says"),
    [
        ("png", "x.nii.gz", f"it is a PNG image, not gzip-compressed NIfTI: {READS}"),
        ("png", "x.nrrd", f"it is a PNG image, not NRRD: {READS}"),  # read by ITK as 2-D
        ("png", "x.dcm", f"it is a PNG image, not DICOM: {READS}"),
        ("jpg", "x.nii", f"it is a JPEG image, not NIfTI: {READS}"),
        ("jpg", "x.mha", f"it is a JPEG image, not MetaImage: {READS}"),
        ("bmp", "x.nrrd", f"it is a BMP image, not NRRD: {READS}"),  # read by ITK as RGB
        ("gif", "x.nii.gz", f"it is a GIF image, not gzip-compressed NIfTI: {READS}"),
        ("pdf", "x.nhdr", f"it is a PDF document, not NRRD: {READS}"),
        (
            "zip",
            "x.nii.gz",
            f"it is a ZIP archive, not gzip-compressed NIfTI: {READS}; unzip it and give the "
            "volume inside",
        ),
        ("npy", "x.nii", f"it is a NumPy .npy array, not NIfTI: {READS}"),
        ("h5", "x.mha", f"it is an HDF5 file, not MetaImage: {READS}"),
        (
            "tif",
            "x.nrrd",
            f"it is a TIFF image, not NRRD: {READS}; save a TIFF stack as one of them, with its "
            "voxel size",
        ),
        (
            "lfs",
            "x.nii.gz",
            "it is a Git LFS pointer file, not the gzip-compressed NIfTI image it stands for: "
            "fetch the real file (`git lfs pull`)",
        ),
    ],
)
def test_a_file_that_holds_no_volume_is_named_for_what_it_is(tmp_path, kind, named, says):
    """Fresh-user trial: a PNG named x.nii.gz gave "not a valid NIfTI file (... is not a gzip
    file)", named x.nrrd "expected a 3-D volume, got a 2-D image of size (64, 64)"."""
    path = write_not_volume(kind, tmp_path / named)
    with pytest.raises(VolumeError) as info:
        read_volume(path)
    assert str(info.value) == f"cannot read {path}: {says}"


def test_a_tiff_stack_under_an_itk_ending_is_still_read(tmp_path):
    """SimpleITK reads a 3-D TIFF whatever its ending: only a TIFF the reader fails on is
    named (under a NIfTI ending nibabel cannot read it)."""
    stack = write_not_volume("tif", tmp_path / "stack.nrrd", stack=True)
    assert read_volume(stack).shape == (32, 24, 8)
    nifti = write_not_volume("tif", tmp_path / "stack.nii.gz", stack=True)
    with pytest.raises(VolumeError, match=r"stack\.nii\.gz: it is a TIFF image, not gzip-comp"):
        read_volume(nifti)


def test_a_file_of_a_dicom_series_reads_its_series_and_a_folder_of_several_names_them(tmp_path):
    """2026-12-03 trial: a PACS export (two series in one folder) could not be read at all,
    the error gave bare UIDs, and one slice file of a series was refused as a single slice."""
    import shutil

    from tests.volumes import UID_ROOT, write_dicom_series

    a_files, _ = write_dicom_series(tmp_path / "a", n=12, uid=f"{UID_ROOT}.77")
    b_files, _ = write_dicom_series(tmp_path / "b", n=8, uid=f"{UID_ROOT}.88", dz=3.0)
    both = tmp_path / "export"
    both.mkdir()
    for f in a_files:
        shutil.copy(f, both / f"A_{f.name}")
    for f in b_files:
        shutil.copy(f, both / f"B_{f.stem}")  # no ending: DICOM by its bytes
    with pytest.raises(VolumeError) as info:
        read_volume(both)
    msg = str(info.value)
    assert msg.startswith(f"{both} holds 2 DICOM series: ")
    assert "(12 file(s), e.g. A_IM0000.dcm, UID " in msg and "(8 file(s), e.g. B_IM0000" in msg
    assert msg.endswith(
        "give one file of the series you want (its series is read), or a folder with one series"
    )
    alone_a, alone_b = read_volume(tmp_path / "a"), read_volume(tmp_path / "b")
    from_a = read_volume(both / "A_IM0005.dcm")
    from_b = read_volume(both / "B_IM0002")
    for got, want in ((from_a, alone_a), (from_b, alone_b)):
        assert got.shape == want.shape
        np.testing.assert_array_equal(got.array, want.array)
        np.testing.assert_allclose(got.affine, want.affine, atol=1e-6)
    lone = tmp_path / "lone"
    lone.mkdir()
    shutil.copy(a_files[0], lone / "only.dcm")  # one slice, nothing else: still refused
    with pytest.raises(VolumeError, match="single slice"):
        read_volume(lone / "only.dcm")
    (tmp_path / "notes").write_text("not an image")
    with pytest.raises(VolumeError, match="unsupported file type 'notes'"):
        read_volume(tmp_path / "notes")
