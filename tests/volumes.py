"""Test helpers: files in every supported format with exactly the header fields a test needs.

NRRD and MetaImage headers are written as text (so a test controls every field, including
the RAS ``space`` ITK never writes); NIfTI with nibabel (so sform and qform can differ);
DICOM series slice by slice with SimpleITK.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

UID_ROOT = "1.2.826.0.1.3680043.2.1125"

#: name -> (ITK direction (LPS), spacing): anisotropic axis-aligned, RAS-stored, oblique.
GEOMETRIES: dict[str, tuple[np.ndarray, tuple[float, float, float]]] = {
    "lps_aniso": (np.eye(3), (0.7, 0.9, 2.5)),
    "ras_stored": (np.diag([-1.0, -1.0, 1.0]), (1.2, 0.8, 2.0)),
    "oblique": (
        Rotation.from_euler("xyz", (17.0, -11.0, 28.0), degrees=True).as_matrix(),
        (0.85, 1.1, 3.0),
    ),
}
ORIGIN = (12.25, -30.5, 7.125)


def image_array(shape: Sequence[int] = (20, 18, 12), seed: int = 0) -> np.ndarray:
    """A float32 ``(I, J, K)`` image with a bright box (not constant, not label-like)."""
    rng = np.random.default_rng(seed)
    img = 100 + 20 * rng.random(tuple(shape))
    img[5:12, 4:10, 3:8] += 400
    return img.astype(np.float32)


def _vec(values: Sequence[float]) -> str:
    return "(" + ",".join(repr(float(v)) for v in values) + ")"


def write_nrrd(
    path: Path,
    array: np.ndarray,
    directions: np.ndarray,
    origin: Sequence[float],
    *,
    space: str = "left-posterior-superior",
    gzip_data: bool = False,
) -> Path:
    """Raw NRRD: ``directions`` columns are the axis vectors in ``space`` (mm)."""
    import gzip

    dtype = {np.dtype(np.float32): "float", np.dtype(np.uint8): "uchar"}[array.dtype]
    cols = " ".join(_vec(directions[:, n]) for n in range(3))
    header = (
        f"NRRD0004\ntype: {dtype}\ndimension: 3\nspace: {space}\n"
        f"sizes: {' '.join(str(s) for s in array.shape)}\nspace directions: {cols}\n"
        f"kinds: domain domain domain\nendian: little\n"
        f"encoding: {'gzip' if gzip_data else 'raw'}\nspace origin: {_vec(origin)}\n\n"
    )
    data = np.asfortranarray(array).tobytes(order="F")
    path.write_bytes(header.encode("ascii") + (gzip.compress(data) if gzip_data else data))
    return path


def write_mha(
    path: Path,
    array: np.ndarray,
    direction: np.ndarray,
    spacing: Sequence[float],
    origin: Sequence[float],
) -> Path:
    """MetaImage with an attached raw data block (``direction``: ITK LPS columns)."""
    etype = {np.dtype(np.float32): "MET_FLOAT", np.dtype(np.uint8): "MET_UCHAR"}[array.dtype]
    matrix = " ".join(repr(float(v)) for v in direction.T.ravel())  # MetaIO: column by column
    header = (
        "ObjectType = Image\nNDims = 3\nBinaryData = True\nBinaryDataByteOrderMSB = False\n"
        f"CompressedData = False\nTransformMatrix = {matrix}\n"
        f"Offset = {' '.join(repr(float(v)) for v in origin)}\n"
        f"ElementSpacing = {' '.join(repr(float(v)) for v in spacing)}\n"
        f"DimSize = {' '.join(str(s) for s in array.shape)}\nElementType = {etype}\n"
        "ElementDataFile = LOCAL\n"
    )
    path.write_bytes(header.encode("ascii") + np.asfortranarray(array).tobytes(order="F"))
    return path


def read_text_header(path: Path) -> dict[str, str]:
    """``key -> value`` of an NRRD or MetaImage text header."""
    raw = path.read_bytes()
    if raw.startswith(b"NRRD"):
        text = raw[: raw.index(b"\n\n")].decode("ascii")
        sep = ":"
    else:
        text = raw[: raw.index(b"ElementDataFile")].decode("ascii")
        sep = "="
    out = {}
    for line in text.splitlines()[1:] if sep == ":" else text.splitlines():
        if line.startswith("#") or sep not in line or ":=" in line:
            continue
        key, value = line.split(sep, 1)
        out[key.strip()] = value.strip()
    return out


def nrrd_vectors(value: str) -> np.ndarray:
    """``(a,b,c) (d,e,f) ...`` -> array of the vectors (rows)."""
    parts = value.replace(")", "").split("(")[1:]
    return np.array([[float(x) for x in p.strip().split(",")] for p in parts])


def write_dicom_series(
    folder: Path,
    *,
    n: int = 12,
    dz: float = 2.5,
    positions: Sequence[float] | None = None,
    rotation: np.ndarray | None = None,
    shape: tuple[int, int] = (16, 18),
    pixel_spacing: tuple[float, float] = (0.7, 0.9),
    origin: Sequence[float] = (-20.0, -30.0, 10.0),
    modality: str = "CT",
    uid: str = f"{UID_ROOT}.77",
    tilt: float = 0.0,
    seed: int = 0,
) -> tuple[list[Path], np.ndarray]:
    """One slice file per position along the normal of ``rotation``'s first two columns.

    Args:
        positions: Offsets (mm) along the slice normal (default ``k * dz``).
        rotation: ITK direction whose columns 0/1 are the row/column directions.
        shape: ``(rows, columns)``.
        pixel_spacing: ``(row spacing, column spacing)`` in mm (DICOM order).
        tilt: In-plane shift (mm per mm along the normal) of each slice: gantry tilt.

    Returns:
        The files in slice order and the ``(K, rows, columns)`` int16 pixel data.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    row, col = rot[:, 0], rot[:, 1]
    normal = np.cross(row, col)
    offsets = [k * dz for k in range(n)] if positions is None else list(positions)
    rng = np.random.default_rng(seed)
    data = (rng.random((len(offsets), *shape)) * 1000 - 200).astype(np.int16)
    files = []
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k, off in enumerate(offsets):
        img = sitk.GetImageFromArray(data[k])
        img.SetSpacing((pixel_spacing[1], pixel_spacing[0]))  # ITK writes PixelSpacing from it
        pos = np.asarray(origin) + off * normal + tilt * off * row
        tags = {
            "0008|0016": "1.2.840.10008.5.1.4.1.1.2",
            "0008|0018": f"{uid}.{k + 1}",
            "0008|0060": modality,
            "0020|000d": f"{uid}.0",
            "0020|000e": uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in pos),
            "0020|0037": "\\".join(f"{v:.8f}" for v in (*row, *col)),
            "0028|0030": f"{pixel_spacing[0]}\\{pixel_spacing[1]}",
        }
        for tag, value in tags.items():
            img.SetMetaData(tag, value)
        path = folder / f"IM{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(img)
        files.append(path)
    return files, data


#: Files that hold no volume, by the extension their writer takes (see :func:`not_volume_bytes`).
NOT_VOLUME_KINDS = ("png", "jpg", "bmp", "gif", "tif", "pdf", "zip", "npy", "h5", "lfs")


def not_volume_bytes(kind: str, *, stack: bool = False) -> bytes:
    """The bytes of a file that holds no volume: a picture (``png``, ``jpg``, ``bmp``,
    ``gif``, ``tif``; ``stack``: a 3-D TIFF of 8 pages), a PDF, a ZIP archive, a NumPy
    ``.npy`` array, an HDF5 file or a Git LFS pointer (``lfs``)."""
    import io
    import tempfile
    import zipfile

    rng = np.random.default_rng(0)
    picture = (rng.random((8, 24, 32) if stack else (24, 32)) * 255).astype(np.uint8)
    if kind in ("png", "jpg", "bmp", "tif"):  # ITK picks its writer by the ending
        with tempfile.TemporaryDirectory() as tmp:
            written = Path(tmp) / f"picture.{kind}"
            sitk.WriteImage(sitk.GetImageFromArray(picture), str(written))
            return written.read_bytes()
    if kind == "gif":
        return b"GIF89a\x20\x00\x18\x00\x80\x00\x00" + bytes(64)
    if kind == "pdf":
        return b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"
    if kind in ("zip", "npy"):
        buf = io.BytesIO()
        if kind == "npy":
            np.save(buf, picture)
        else:
            with zipfile.ZipFile(buf, "w") as zf:
                zf.writestr("series/IM0001.dcm", bytes(200))
        return buf.getvalue()
    if kind == "h5":
        return b"\x89HDF\r\n\x1a\n" + bytes(200)
    if kind == "lfs":
        return (
            b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:" + b"ab" * 32 + b"\nsize 31457280\n"
        )
    raise ValueError(f"unknown kind {kind!r}")


def write_not_volume(kind: str, path: Path, *, stack: bool = False) -> Path:
    """:func:`not_volume_bytes` written to ``path``, whatever its ending says."""
    path.write_bytes(not_volume_bytes(kind, stack=stack))
    return path
