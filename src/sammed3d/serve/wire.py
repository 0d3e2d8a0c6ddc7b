"""The "NNIA" array format of the nnInteractive HTTP protocol (reader with limits, writer).

The PyPI package ``nninteractive-client`` (``nnInteractive.inference.remote.serialization``)
defines the layout; all integers little-endian::

    b"NNIA" | version u8 (1) | codec u8 (1 zstd, 2 lz4) | ndim u8 | len(dtype) u8
    | dtype name (ASCII, e.g. "float32") | shape: ndim x i64
    | nchunks u32 | nchunks x (raw length u64, compressed length u64, blosc2 frame)

Each chunk holds at most 1 GiB of raw bytes in C order. :func:`decode_array` checks every
length against the bytes that arrived and the declared shape against ``max_bytes`` before
it allocates anything, so a truncated, inflated or hostile body is a one-line
:class:`WireError` instead of a crash or a huge allocation.
"""

from __future__ import annotations

import struct

import numpy as np

MAGIC = b"NNIA"
VERSION = 1
#: Codec ids of the header -> blosc2 codec names.
CODEC_IDS = {1: "ZSTD", 2: "LZ4"}
#: Raw bytes per chunk the writer uses (the reader accepts any chunking).
CHUNK_BYTES = 1 << 30
#: dtypes the reader accepts (the wire carries numpy's dtype names).
DTYPES = (
    "bool",
    "uint8",
    "int8",
    "uint16",
    "int16",
    "uint32",
    "int32",
    "uint64",
    "int64",
    "float16",
    "float32",
    "float64",
)
MAX_NDIM = 8


class WireError(ValueError):
    """A malformed or unacceptable array body (one-line message).

    Args:
        message: What was expected and what came.
        status: The HTTP status it maps to (400, or 413 for too large).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def decode_array(buf: bytes | bytearray | memoryview, *, max_bytes: int) -> np.ndarray:
    """Read one NNIA array.

    Args:
        buf: The whole request body.
        max_bytes: Largest raw array size accepted (checked from the header, before any
            allocation).

    Returns:
        The array, C order, native byte order, the dtype and shape of the header.

    Raises:
        WireError: bad magic/version/codec/dtype, negative or too many dimensions, a body
            shorter or longer than its header says, a corrupt chunk (status 400), or a
            declared size above ``max_bytes`` (status 413).
    """
    mv = memoryview(buf).cast("B")
    total_len = len(mv)
    if total_len < 8:
        raise WireError(f"array body too short: {total_len} bytes, the NNIA header alone needs 8")
    magic, version, codec_id, ndim, name_len = struct.unpack_from("<4sBBBB", mv, 0)
    if magic != MAGIC:
        raise WireError(f"not an NNIA array: body starts with {bytes(magic)!r}, expected b'NNIA'")
    if version != VERSION:
        raise WireError(f"unsupported NNIA version {version} (this server reads version 1)")
    if codec_id not in CODEC_IDS:
        raise WireError(f"unsupported NNIA codec id {codec_id} (1 = zstd, 2 = lz4)")
    if ndim > MAX_NDIM:
        raise WireError(f"array has {ndim} dimensions; at most {MAX_NDIM} are accepted")
    offset = 8
    _need(mv, offset, name_len + 8 * ndim + 4, "dtype name and shape")
    try:
        name = bytes(mv[offset : offset + name_len]).decode("ascii")
    except UnicodeDecodeError:
        raise WireError("dtype name in the NNIA header is not ASCII") from None
    if name not in DTYPES:
        raise WireError(f"unsupported dtype {name!r}; expected one of {', '.join(DTYPES)}")
    dtype = np.dtype(name)
    offset += name_len
    shape = struct.unpack_from(f"<{ndim}q", mv, offset)
    offset += 8 * ndim
    if any(d < 0 for d in shape):
        raise WireError(f"negative dimension in declared shape {list(shape)}")
    nelem = 1
    for d in shape:
        nelem *= int(d)
    nbytes = nelem * dtype.itemsize
    if nbytes > max_bytes:
        raise WireError(
            f"declared array {list(shape)} {name} is {nbytes / 2**20:.1f} MiB; this server "
            f"accepts at most {max_bytes / 2**20:.1f} MiB (--max-upload-mb)",
            status=413,
        )
    (nchunks,) = struct.unpack_from("<I", mv, offset)
    offset += 4
    if 16 * nchunks > total_len - offset:
        raise WireError(
            f"array body truncated: {nchunks} chunks declared, the body has only "
            f"{total_len - offset} bytes left"
        )
    import blosc2

    out = np.empty(nelem, dtype=dtype)
    raw = out.view(np.uint8)
    written = 0
    for n in range(nchunks):
        _need(mv, offset, 16, f"chunk {n} header")
        ulen, clen = struct.unpack_from("<QQ", mv, offset)
        offset += 16
        if written + ulen > nbytes:
            raise WireError(
                f"chunk {n} would write past the declared shape {list(shape)} ({nbytes} bytes)"
            )
        _need(mv, offset, clen, f"chunk {n} data")
        src = mv[offset : offset + clen]
        try:
            frame_raw, frame_clen, _ = blosc2.get_cbuffer_sizes(src)
        except (ValueError, RuntimeError):
            raise WireError(f"chunk {n} is not a blosc2 frame (corrupt or truncated)") from None
        if frame_raw != ulen or frame_clen != clen:
            raise WireError(
                f"chunk {n} header says {ulen} raw / {clen} compressed bytes, its frame says "
                f"{frame_raw} / {frame_clen} (corrupt or truncated body)"
            )
        if ulen:
            try:
                blosc2.decompress2(src, dst=raw[written : written + ulen])
            except (ValueError, RuntimeError):
                raise WireError(f"chunk {n} cannot be decompressed (corrupt data)") from None
        written += ulen
        offset += clen
    if written != nbytes:
        raise WireError(
            f"body holds {written} bytes of array data, the declared shape {list(shape)} "
            f"{name} needs {nbytes} (truncated body?)"
        )
    if offset != total_len:
        raise WireError(f"{total_len - offset} unexpected bytes after the last chunk")
    return out.reshape(shape)


def encode_array(array: np.ndarray, *, codec: str = "LZ4", clevel: int = 5) -> bytes:
    """Write one NNIA array (no shuffle filter: masks compress best without it).

    Args:
        array: Any array of a dtype in :data:`DTYPES`.
        codec: ``"LZ4"`` (fast, the default for masks) or ``"ZSTD"``.
        clevel: blosc2 compression level 0-9.
    """
    import blosc2

    arr = np.ascontiguousarray(array)
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    name = arr.dtype.name
    if name not in DTYPES:
        raise ValueError(f"cannot encode dtype {name}; expected one of {', '.join(DTYPES)}")
    if arr.ndim > MAX_NDIM:
        raise ValueError(f"cannot encode {arr.ndim} dimensions (at most {MAX_NDIM})")
    ids = {v: k for k, v in CODEC_IDS.items()}
    if codec not in ids:
        raise ValueError(f"codec must be one of {sorted(ids)}, got {codec!r}")
    parts = [
        struct.pack("<4sBBBB", MAGIC, VERSION, ids[codec], arr.ndim, len(name)),
        name.encode("ascii"),
        struct.pack(f"<{arr.ndim}q", *arr.shape),
    ]
    raw = memoryview(arr.reshape(-1).view(np.uint8))
    chunks = [raw[i : i + CHUNK_BYTES] for i in range(0, len(raw), CHUNK_BYTES)]
    parts.append(struct.pack("<I", len(chunks)))
    for chunk in chunks:
        frame = blosc2.compress2(
            chunk,
            typesize=arr.dtype.itemsize,
            codec=getattr(blosc2.Codec, codec),
            clevel=clevel,
            filters=[blosc2.Filter.NOFILTER],
        )
        parts.append(struct.pack("<QQ", len(chunk), len(frame)))
        parts.append(frame)
    return b"".join(parts)


def _need(mv: memoryview, offset: int, count: int, what: str) -> None:
    if offset + count > len(mv):
        raise WireError(
            f"array body truncated: {what} needs {count} bytes at offset {offset}, the body "
            f"has {len(mv)}"
        )
