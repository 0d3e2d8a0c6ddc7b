"""File-kind detection: checkpoints before ``torch.load``, image files by their bytes."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from sammed3d.io import Volume, write_volume
from sammed3d.sniff import NOT_VOLUMES, checkpoint_problem, misnamed_volume, volume_format
from tests.volumes import NOT_VOLUME_KINDS, write_not_volume


def test_real_checkpoints_pass(tmp_path):
    torch.save({"w": torch.zeros(3)}, tmp_path / "zip.pth")
    torch.save({"w": torch.zeros(3)}, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    assert checkpoint_problem(tmp_path / "zip.pth") is None
    assert checkpoint_problem(tmp_path / "legacy.pth") is None


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    return struct.pack("<Q", len(header)) + header + b"\x00" * 4


def _npy() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.zeros(3))
    return buf.getvalue()


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("readme.txt", "hi")
    return buf.getvalue()


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"\xef\xbb\xbf<!doctype HTML><title>x</title>", "HTML page"),
        (gzip.compress(b"abc"), "gzip"),
        (_npy(), "NumPy"),
        (b"\x89HDF\r\n\x1a\n" + b"\x00" * 100, "HDF5"),
        (_safetensors(), "safetensors"),
        (
            _zip(),
            f"ZIP archive but not a PyTorch checkpoint ({len(_zip())} bytes; holds readme.txt)",
        ),
        (_zip()[:-10], "truncated ZIP"),
        ("Dice 0.9 — grüße\n".encode() * 30, "text file"),
    ],
)
def test_other_kinds_are_named(tmp_path, data, words):
    path = tmp_path / "f.pth"
    path.write_bytes(data)
    problem = checkpoint_problem(path)
    assert problem is not None and words in problem
    assert "\n" not in problem


def test_unreadable_file_raises(tmp_path):
    with pytest.raises(OSError):
        checkpoint_problem(tmp_path / "missing.pth")


NAMES = {
    "png": "PNG image",
    "jpg": "JPEG image",
    "bmp": "BMP image",
    "gif": "GIF image",
    "tif": "TIFF image",
    "pdf": "PDF document",
    "zip": "ZIP archive",
    "npy": "NumPy .npy array",
    "h5": "HDF5 file",
    "lfs": "Git LFS pointer",
}


@pytest.mark.parametrize("kind", NOT_VOLUME_KINDS)
def test_files_that_hold_no_volume_are_named_by_their_bytes(tmp_path, kind):
    path = write_not_volume(kind, tmp_path / "x.nii.gz")
    assert volume_format(path) == NAMES[kind]
    assert NAMES[kind] in NOT_VOLUMES
    # named even when the reader opened the file (ITK reads a PNG as a 2-D image)
    why = misnamed_volume(path, ".nii.gz", opened=True)
    assert why is not None and why.startswith(f"it is a{'n' if kind == 'h5' else ''} {NAMES[kind]}")
    assert "gzip-compressed NIfTI" in why


@pytest.mark.parametrize(
    ("suffix", "name"),
    [
        (".nii.gz", "gzip-compressed NIfTI"),
        (".nii", "NIfTI"),
        (".nrrd", "NRRD"),
        (".mha", "MetaImage"),
    ],
)
def test_volumes_are_not_taken_for_pictures(tmp_path, suffix, name):
    vol = Volume(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), (1, 1, 2))
    path = write_volume(vol, tmp_path / f"v{suffix}")
    assert volume_format(path) == name
    assert misnamed_volume(path, suffix) is None


def test_a_volume_the_reader_opened_under_another_name_keeps_the_readers_reason(tmp_path):
    vol = Volume(np.random.default_rng(0).random((6, 7, 8)).astype(np.float32), (1, 1, 2))
    path = write_volume(vol, tmp_path / "v.mha")
    assert misnamed_volume(path, ".nrrd") == (
        "it holds MetaImage data, not NRRD: rename it to end in .mha"
    )
    assert misnamed_volume(path, ".nrrd", opened=True) is None


@pytest.mark.parametrize(
    "data",
    [b"BM" + bytes(100), b"BMW engine manual\n" * 10, b"II*", b"GIF8", b"PK"],
    ids=["bm-zeros", "bm-text", "short-tiff", "short-gif", "short-zip"],
)
def test_near_misses_are_not_named(tmp_path, data):
    path = tmp_path / "x.nrrd"
    path.write_bytes(data)
    assert volume_format(path) is None
