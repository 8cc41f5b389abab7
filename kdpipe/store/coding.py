"""How a store represents its numbers on disk: value encodings, chunk codecs, row deltas.

This module is the one definition of the format's representation (docs/store-format.md,
sections 2-4); the writer encodes with it, the readers (``reader``, ``chunkio``, ``verify``)
decode and check against it.

**Values** (section 3): log-probabilities as uint8 codes on a log-linear grid over
[-16, 0] (``log_codebook``; code 0 is probability zero) or as float16 clipped at -1e4
(``encode_logp``), with the largest rounding error ``quantization_step``.

**Codecs** (docs/store-format.md, section 2): class ids (``indices``, ``hard``) are
compressed without shuffling, so that zstd's matches find the ids a frame shares with the
frames before it; every other array is bit-shuffled first (its high bits are mostly equal).
Both use blosc zstd level 5 in blocks of a whole chunk (up to 2 MiB), then crc32c, so that
every reader detects a damaged chunk: the chain ``CODEC_CHAIN`` (bytes -> blosc -> crc32c),
which ``chunkio`` recognises to read an array itself.

**Row delta** (format 2, section 4): the uint8 value codes of a sparse row are in
descending order, q_0 >= q_1 >= ..., and are stored as d_0 = 255 - q_0, d_j = q_{j-1} - q_j:
small non-negative numbers that compress ~20 % better than the codes. Each prefix sum
d_0 + ... + d_j = 255 - q_j lies in [0, 255], so decoding is a byte-wise prefix sum that
never carries: one integer multiplication per 8 codes.

Shapes: R rows; k codes per row (fixed layout, (R, k)); nnz codes of the variable layout,
(nnz,) with CSR row offsets (R+1,).
"""

from __future__ import annotations

from typing import Any

import numpy as np

LOGP_MIN = -16.0  # uint8 codes span log-probs [-16, 0]: e^-16 ~ 1e-7 is negligible mass
CODE_LEVELS = 254  # codes 1..255 are the grid; code 0 means probability zero
FLOAT16_FLOOR = -1.0e4  # float16 log-probs are clipped here (exp underflows to 0 anyway)
ROW_DELTA = "row-delta"  # the transform of uint8 values of sparse rows in format 2
NO_TRANSFORM = "none"
TRANSFORMS = (NO_TRANSFORM, ROW_DELTA)
CLASS_ID_ARRAYS = ("indices", "hard")  # compressed without shuffling (see the docstring)
MAX_BLOCK_BYTES = 1 << 21  # blosc block: a whole chunk up to 2 MiB (k <= 8: 2-5 % smaller
# than blosc's own 256 KiB; bigger blocks decode slower)
ZSTD_LEVEL = 5  # = zstd 9: compresses ~2 M frames/s; clevel 9 (zstd 22) saves 1 B at 0.15 M


CODEC_CHAIN = ("bytes", "blosc", "crc32c")  # every array's codecs, in order (``codecs``)


def log_codebook() -> np.ndarray:
    """(256,) float32 log-prob of each uint8 code: 0 -> -inf, c >= 1 -> -16 + (c-1)*16/254."""
    book = np.empty(256, dtype=np.float32)
    book[0] = -np.inf
    book[1:] = LOGP_MIN + np.arange(CODE_LEVELS + 1, dtype=np.float64) * (-LOGP_MIN / CODE_LEVELS)
    return book


def quantization_step(encoding: str) -> float:
    """Largest log-prob rounding error of an encoding (half a code step for uint8)."""
    return -LOGP_MIN / CODE_LEVELS / 2 if encoding == "uint8" else 2.0**-11 * -LOGP_MIN


def sum_tolerance(encoding: str) -> float:
    """How far sum(exp(values)) + exp(tail) may be from 1 after encoding: the relative
    error of the largest rounding (e^0.0315 - 1 = 0.032 for uint8, 0.008 for float16)
    plus a margin."""
    return 0.035 if encoding == "uint8" else 0.010


def encode_logp(x: np.ndarray, encoding: str, *, tail: bool = False) -> np.ndarray:
    """Store log-probs ``x`` (any shape) as ``encoding``; values are clipped into range.

    uint8: nearest code on the grid; kept values never use code 0 (they clip to e^-16),
    a tail below e^-16 / 2 becomes code 0 (zero). float16: clipped to [-1e4, 0]; a tail
    may be -inf.
    """
    x = np.asarray(x, dtype=np.float32)
    if encoding == "float16":
        lo = -np.inf if tail else FLOAT16_FLOOR
        return np.clip(x, lo, 0.0).astype(np.float16)
    with np.errstate(invalid="ignore"):
        q = np.rint((np.clip(x, LOGP_MIN, 0.0) - LOGP_MIN) * (CODE_LEVELS / -LOGP_MIN)) + 1
    codes = q.astype(np.uint8)
    if tail:
        codes[x < LOGP_MIN - np.log(2.0)] = 0
    return codes


def codecs(name: str, itemsize: int, chunk_bytes: int) -> dict[str, Any]:
    """Keyword arguments of ``create_array`` for the array called ``name`` (its last path
    component) with items of ``itemsize`` bytes and chunks of ``chunk_bytes`` bytes."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    blosc = BloscCodec(
        cname="zstd",
        clevel=ZSTD_LEVEL,
        shuffle="noshuffle" if name in CLASS_ID_ARRAYS else "bitshuffle",
        typesize=itemsize,
        blocksize=min(max(chunk_bytes, itemsize), MAX_BLOCK_BYTES),
    )
    return {"filters": None, "compressors": [blosc, Crc32cCodec()]}


def delta_encode(codes: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Row-delta of uint8 codes (R, k), or (nnz,) with CSR ``offsets``; rows descending."""
    q = np.asarray(codes, dtype=np.uint8)
    d = np.empty_like(q)
    if not q.size:
        return d
    if offsets is None:  # (R, k)
        d[:, 0] = 255 - q[:, 0]
        np.subtract(q[:, :-1], q[:, 1:], out=d[:, 1:])
        return d
    np.subtract(q[:-1], q[1:], out=d[1:])  # (nnz,)
    off = np.asarray(offsets, dtype=np.int64)
    starts = off[:-1][np.diff(off) > 0]
    d[starts] = 255 - q[starts]
    return d


def delta_decode(stored: np.ndarray, offsets: np.ndarray | None = None) -> np.ndarray:
    """Inverse of ``delta_encode``: the uint8 codes, a new array shaped like ``stored``."""
    d = np.asarray(stored, dtype=np.uint8)
    if not d.size:
        return d.copy()
    if offsets is None:
        k = d.shape[1]
        if k in (1, 2, 4) or k % 8 == 0:
            return _decode_lanes(d)
        offsets = np.arange(0, d.size + 1, k, dtype=np.int64)
    flat = d.reshape(-1)
    e = np.cumsum(flat, dtype=np.uint8)  # (nnz,) prefix sums modulo 256
    off = np.asarray(offsets, dtype=np.int64)
    before = np.zeros(len(off) - 1, dtype=np.uint8)  # prefix sum before each row
    later = off[:-1] > 0
    before[later] = e[off[:-1][later] - 1]
    e -= np.repeat(before, np.diff(off))
    return (255 - e).reshape(d.shape)


def _decode_lanes(d: np.ndarray) -> np.ndarray:
    """(R, k) fixed-width rows, k in {1, 2, 4} or a multiple of 8: prefix sums along each
    row in little-endian integer lanes of up to 8 codes (x * 0x0101.. sums the lower
    bytes into each byte); lanes after the first add the running sum of those before."""
    r, k = d.shape
    w = min(k, 8)
    lane = np.dtype(f"<u{w}")
    ones = lane.type(int("01" * w, 16))
    x = np.ascontiguousarray(d).view(lane)  # (R, k / w)
    p = x * ones
    shift = lane.type(8 * (w - 1))
    for j in range(1, p.shape[1]):
        p[:, j] += (p[:, j - 1] >> shift) * ones
    np.invert(p, out=p)  # 255 - prefix, byte-wise
    return p.view(np.uint8).reshape(r, k)


def values_transform(layout: str, values: str) -> str:
    """The transform of the values array in format 2: row delta for uint8 sparse rows."""
    return ROW_DELTA if values == "uint8" and layout != "dense" else NO_TRANSFORM
