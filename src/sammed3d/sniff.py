"""What a file is, judged from its bytes: a checkpoint before ``torch.load`` is trusted with
it, and an image file whose ending names another format (:func:`misnamed_volume`: another
volume format, or no volume at all, such as a PNG, JPEG or TIFF picture, a PDF or a ZIP).

A failed download does not look like a failed download: a file host that runs out of quota, a
login wall or a proxy answers with an HTML page, and a broken connection leaves a file cut short.
``torch.load`` then fails with text that does not say so (and, under ``weights_only=True``, with
advice to load unsafely). :func:`checkpoint_problem` names the problem in one line instead.

Signatures used (first bytes of the file):

* PyTorch >= 1.6 (``torch.save`` default): a ZIP archive (``PK\\x03\\x04``) holding
  ``<record>/data.pkl``; a complete ZIP ends with an end-of-central-directory record, so a
  truncated one is recognised without reading it all (:func:`zipfile.is_zipfile`).
* PyTorch legacy format: a pickle whose first object is the magic number
  ``0x1950a86a20f9469cfc6c`` (``torch.serialization.MAGIC_NUMBER``).
* Others named for the user: HTML, Git LFS pointer, plain pickle, gzip, NumPy ``.npy``,
  safetensors, HDF5, other text, empty.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zipfile
from pathlib import Path

#: ``pickle.dumps(torch.serialization.MAGIC_NUMBER)`` without the protocol header: the bytes a
#: legacy ``torch.save`` file carries near its start (protocol 2 puts them at offset 2).
_LEGACY_TORCH_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_HEAD_BYTES = 4096
_HTML_MARKERS = (b"<!doctype html", b"<html", b"<head", b"<body", b"<!--", b"<?xml", b"<title")


def checkpoint_problem(path: str | os.PathLike[str]) -> str | None:
    """Why ``path`` is not a PyTorch checkpoint, judged from its bytes; None if it may be one.

    Returns:
        None for a complete ZIP archive with a ``data.pkl`` record or a legacy torch pickle;
        otherwise a short phrase to follow the file name, e.g. ``"is an HTML page (1,234
        bytes), not a checkpoint: ..."``. Never advice to load the file unsafely.

    Raises:
        OSError: the file cannot be read.
    """
    p = Path(path)
    size = p.stat().st_size
    if size == 0:
        return "is empty (0 bytes): an interrupted download or copy?"
    with p.open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    n = f"{size:,} bytes"

    if head.startswith(b"PK\x03\x04"):
        if not zipfile.is_zipfile(p):
            return (
                f"is a truncated ZIP/PyTorch archive ({n}; its end is missing): an interrupted "
                "download or copy? Fetch it again"
            )
        try:
            with zipfile.ZipFile(p) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            return f"is a damaged ZIP archive ({n}): {exc}"
        if not any(name.endswith("data.pkl") for name in names):
            sample = ", ".join(names[:3]) or "nothing"
            return f"is a ZIP archive but not a PyTorch checkpoint ({n}; holds {sample})"
        return None
    if head.startswith(b"\x80") and _LEGACY_TORCH_MAGIC in head[:64]:
        return None

    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith(_HTML_MARKERS) or b"<html" in lowered[:1024]:
        return (
            f"is an HTML page ({n}{_html_title(head)}), not a checkpoint: what a download "
            "gives when the host answers with an error, login or quota page instead of the file"
        )
    if head.startswith(b"version https://git-lfs.github.com/spec/"):
        return (
            f"is a Git LFS pointer file ({n}), not the weights it points to: fetch the real "
            "file (`git lfs pull`, or `sammed3d weights download NAME`)"
        )
    if head.startswith(b"\x80") and len(head) > 1 and 2 <= head[1] <= 5:
        return (
            f"is a plain Python pickle (protocol {head[1]}, {n}), not a PyTorch checkpoint "
            "(torch.save writes a ZIP archive)"
        )
    if head.startswith(b"\x1f\x8b"):
        return f"is a gzip-compressed file ({n}), not a PyTorch checkpoint"
    if head.startswith(b"\x93NUMPY"):
        return f"is a NumPy .npy array ({n}), not a PyTorch checkpoint"
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return f"is an HDF5 file ({n}), not a PyTorch checkpoint"
    if _is_safetensors(head, size):
        return f"is a safetensors file ({n}); sammed3d reads PyTorch checkpoints (.pth, torch.save)"
    if _looks_like_text(head):
        first = head.decode("utf-8", errors="replace").strip().splitlines()[0][:60]
        return f"is a text file ({n}, starts with {first!r}), not a checkpoint"
    return (
        f"is not a readable PyTorch checkpoint ({n}; unrecognised content starting with bytes "
        f"{head[:8].hex(' ')})"
    )


def _html_title(head: bytes) -> str:
    m = re.search(rb"<title[^>]*>(.*?)</title", head, flags=re.IGNORECASE | re.DOTALL)
    if not m:
        return ""
    title = " ".join(m.group(1).decode("utf-8", errors="replace").split())[:60]
    return f", title {title!r}" if title else ""


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 10:
        return False
    (header_len,) = struct.unpack("<Q", head[:8])
    if not 2 <= header_len <= size - 8 or head[8:9] != b"{":
        return False
    if header_len + 8 > len(head):
        return head[8:10] in (b'{"', b"{}")
    try:
        return isinstance(json.loads(head[8 : 8 + header_len]), dict)
    except ValueError:
        return False


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the window is still text.
        try:
            text = head[:-4].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    return bool(text) and printable / len(text) > 0.95


# ------------------------------------------------------------------------------------------
# image files

#: What :func:`volume_format` names, with the endings that hold it.
VOLUME_FORMATS: dict[str, tuple[str, ...]] = {
    "NIfTI": (".nii",),
    "gzip-compressed NIfTI": (".nii.gz",),
    "NRRD": (".nrrd", ".nhdr"),
    "MetaImage": (".mha", ".mhd"),
    "DICOM": (".dcm",),
}


#: Files that hold no volume, by their first bytes: what :func:`volume_format` calls them.
_NOT_VOLUMES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG image"),
    (b"\xff\xd8\xff", "JPEG image"),
    (b"GIF87a", "GIF image"),
    (b"GIF89a", "GIF image"),
    (b"%PDF-", "PDF document"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"PK\x05\x06", "ZIP archive"),  # an empty one
    (b"\x93NUMPY", "NumPy .npy array"),
    (b"\x89HDF\r\n\x1a\n", "HDF5 file"),
    (b"version https://git-lfs.github.com/spec/", "Git LFS pointer"),
)
#: Little- and big-endian TIFF and BigTIFF. A TIFF can be a 3-D stack (SimpleITK reads one
#: under another image ending), so it is named only when the reader failed.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

#: What :func:`volume_format` may return for a file that holds no volume format.
NOT_VOLUMES = frozenset(
    {name for _, name in _NOT_VOLUMES} | {"BMP image", "TIFF image", "HTML page"}
)

_READS = (
    "sammed3d reads 3-D volumes (NIfTI .nii/.nii.gz, NRRD .nrrd/.nhdr, MetaImage .mha/.mhd, "
    "a DICOM series)"
)


def _nifti_magic(head: bytes) -> bool:
    """NIfTI-1 (``sizeof_hdr`` 348, magic at 344) or NIfTI-2 (540, magic at 4), either
    byte order."""
    if len(head) >= 348 and head[344:348] in (b"n+1\x00", b"ni1\x00"):
        return True
    return len(head) >= 8 and head[4:8] in (b"n+2\x00", b"ni2\x00")


def _bmp_magic(head: bytes) -> bool:
    """``BM``, two reserved zero words and a known DIB header size (12 to 124 bytes)."""
    if len(head) < 18 or not head.startswith(b"BM") or head[6:10] != b"\x00" * 4:
        return False
    (dib,) = struct.unpack("<I", head[14:18])
    return dib in (12, 16, 40, 52, 56, 64, 108, 124)


def volume_format(path: str | os.PathLike[str]) -> str | None:
    """The image format a file holds, judged from its first bytes (not its name).

    Returns:
        A key of :data:`VOLUME_FORMATS`; ``"gzip-compressed file"`` for other gzip
        content; for a file that holds no volume format, one of :data:`NOT_VOLUMES`
        (``"PNG image"``, ``"JPEG image"``, ``"TIFF image"``, ``"BMP image"``, ``"GIF image"``,
        ``"PDF document"``, ``"ZIP archive"``, ``"NumPy .npy array"``, ``"HDF5 file"``,
        ``"Git LFS pointer"``, ``"HTML page"``); or None when the bytes match none of them.

    Raises:
        OSError: the file cannot be read.
    """
    import zlib

    with Path(path).open("rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if head.startswith(b"\x1f\x8b"):
        try:  # the first bytes of the stream: enough for a NIfTI header
            inner = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, 1024)
        except zlib.error:
            inner = b""
        return "gzip-compressed NIfTI" if _nifti_magic(inner) else "gzip-compressed file"
    if _nifti_magic(head):
        return "NIfTI"
    if head.startswith(b"NRRD000"):
        return "NRRD"
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "DICOM"
    text = head[:256].decode("latin-1").lower()
    if re.match(r"\s*(objecttype|ndims|comment|transformtype)\s*=", text):
        return "MetaImage"
    for magic, name in _NOT_VOLUMES:
        if head.startswith(magic):
            return name
    if head.startswith(_TIFF_MAGIC):
        return "TIFF image"
    if _bmp_magic(head):
        return "BMP image"
    lowered = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if lowered.startswith(_HTML_MARKERS):
        return "HTML page"
    return None


def misnamed_volume(
    path: str | os.PathLike[str], suffix: str, *, opened: bool = False
) -> str | None:
    """Why a file named with ``suffix`` could not be read, when its bytes are another format.

    Args:
        path: The file.
        suffix: Its image ending (one of those in :data:`VOLUME_FORMATS`).
        opened: The reader opened the file and refused what it found (a 2-D or RGB image):
            only a file that holds no volume format (:data:`NOT_VOLUMES`) is then named, since
            a volume of another format that the reader opened under this name has the reader's
            reason.

    Returns:
        A phrase such as ``"it holds gzip-compressed NIfTI data, not NRRD: rename it to
        end in .nii.gz"`` or ``"it is a PNG image, not NRRD: sammed3d reads 3-D volumes
        (...)"``, or None when the bytes are of the format the name says (or of none this
        module knows): the reader's own reason then stands.
    """
    try:
        found = volume_format(path)
    except OSError:
        return None
    if found is None or (opened and found not in NOT_VOLUMES):
        return None
    said = next((name for name, ends in VOLUME_FORMATS.items() if suffix in ends), suffix)
    if found == said:
        return None
    ends = VOLUME_FORMATS.get(found)
    if found == "HTML page":
        return f"it is an HTML page, not {said} (a failed download?)"
    if found == "Git LFS pointer":
        return (
            f"it is a Git LFS pointer file, not the {said} image it stands for: fetch the "
            "real file (`git lfs pull`)"
        )
    if found == "TIFF image":
        return (
            f"it is a TIFF image, not {said}: {_READS}; save a TIFF stack as one of them, "
            "with its voxel size"
        )
    if found == "ZIP archive":
        return f"it is a ZIP archive, not {said}: {_READS}; unzip it and give the volume inside"
    if found in NOT_VOLUMES:
        article = "an" if found[0] in "AEIOUH" else "a"
        return f"it is {article} {found}, not {said}: {_READS}"
    if ends is None:
        return f"it holds {found} data, not {said}"
    return f"it holds {found} data, not {said}: rename it to end in {ends[0]}"
