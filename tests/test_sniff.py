"""File-kind detection before ``torch.load``."""

from __future__ import annotations

import gzip
import io
import json
import struct
import zipfile

import numpy as np
import pytest
import torch

from sammed3d.sniff import checkpoint_problem


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
