"""The NNIA array format: round trips with the real client's writer/reader, and bad bodies."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from sammed3d.serve import wire
from sammed3d.serve.wire import WireError, decode_array, encode_array

serialization = pytest.importorskip("nnInteractive.inference.remote.serialization")

MB = 1 << 20


@pytest.mark.parametrize("dtype", wire.DTYPES)
def test_reads_what_the_client_writes(dtype: str) -> None:
    rng = np.random.default_rng(0)
    arr = (
        rng.uniform(0, 100, (1, 7, 5, 9)) > 50
        if dtype == "bool"
        else rng.uniform(0, 100, (1, 7, 5, 9))
    ).astype(dtype)
    out = decode_array(serialization.pack_array(arr), max_bytes=MB)
    assert out.dtype == arr.dtype and out.shape == arr.shape
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("codec", ["LZ4", "ZSTD"])
def test_client_reads_what_the_server_writes(codec: str) -> None:
    mask = np.zeros((13, 11, 17), dtype=np.uint8)
    mask[3:9, 2:7, 5:15] = 1
    back = serialization.unpack_array(encode_array(mask, codec=codec))
    np.testing.assert_array_equal(back, mask)
    empty = np.zeros((4, 5, 6), dtype=bool)  # all-zero payloads are a known blosc2 pitfall
    np.testing.assert_array_equal(serialization.unpack_array(encode_array(empty)), empty)


def test_several_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire, "CHUNK_BYTES", 1000)
    arr = np.arange(3000, dtype=np.int16).reshape(10, 15, 20)
    body = encode_array(arr)
    assert struct.unpack_from("<I", body, 8 + 5 + 3 * 8)[0] == 6
    np.testing.assert_array_equal(decode_array(body, max_bytes=MB), arr)
    np.testing.assert_array_equal(serialization.unpack_array(body), arr)


def _good() -> bytes:
    return serialization.pack_array(np.ones((1, 4, 4, 4), np.float32))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "too short"),
        (b"XXXX" + _good()[4:], "not an NNIA array"),
        (_good()[:4] + b"\x07" + _good()[5:], "version"),
        (_good()[:5] + b"\x09" + _good()[6:], "codec"),
        (_good()[:20], "truncated"),
        (_good()[:-7], "truncated"),
        (_good() + b"\x00\x00", "unexpected bytes"),
    ],
)
def test_bad_bodies_are_one_line_errors(body: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message) as info:
        decode_array(body, max_bytes=MB)
    assert info.value.status == 400
    assert "\n" not in str(info.value)


def _header(dtype: bytes, shape: tuple[int, ...], nchunks: int = 0) -> bytes:
    head = struct.pack("<4sBBBB", b"NNIA", 1, 1, len(shape), len(dtype)) + dtype
    return head + struct.pack(f"<{len(shape)}q", *shape) + struct.pack("<I", nchunks)


def test_huge_declared_shape_is_413_before_any_allocation() -> None:
    body = _header(b"float32", (1, 100000, 100000, 100000))
    with pytest.raises(WireError, match="MiB") as info:
        decode_array(body, max_bytes=MB)
    assert info.value.status == 413


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_header(b"object", (1, 2, 2, 2)), "unsupported dtype"),
        (_header(b"complex64", (1, 2, 2, 2)), "unsupported dtype"),
        (_header(b"\xff\xfe", (2,)), "ASCII"),
        (_header(b"uint8", (1, -2, 2, 2)), "negative"),
        (_header(b"uint8", (1, 2, 2, 2), nchunks=5), "truncated"),
        (_header(b"uint8", (1, 2, 2, 2)), "needs 8"),
    ],
)
def test_bad_headers(body: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_array(body, max_bytes=MB)


def test_chunk_lengths_must_match_their_frame() -> None:
    good = bytearray(serialization.pack_array(np.arange(64, dtype=np.uint8).reshape(1, 4, 4, 4)))
    offset = 8 + len("uint8") + 4 * 8 + 4
    struct.pack_into("<Q", good, offset, 32)  # claims 32 raw bytes, the frame holds 64
    with pytest.raises(WireError, match="frame says"):
        decode_array(bytes(good), max_bytes=MB)
