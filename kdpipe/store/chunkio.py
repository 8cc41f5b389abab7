"""Row-range reads of a store's arrays: chunks fetched concurrently, decoded in threads.

The format's arrays have one codec chain (docs/store-format.md, section 2): little-endian
bytes, blosc, crc32c, chunked along the first axis only. zarr 3.1 reads such slices at about
18 M frames/s on our 2-core machine (top-8 rows: uint16 ids, uint8 codes, tail), what one
thread decoding the chunks in turn gives, although blosc releases the GIL; two threads
reading and decoding the same files give ~33 M. So this module fetches every chunk of a read
at once (through zarr's store: local, fsspec) and hands each to a pool of threads that
checks its CRC32C and blosc-decodes it straight into its place in the result (a local file
is read in that thread too). An array with any other layout or codecs is read by zarr.

Shapes: an array (N, *rest) chunked (C, *rest); a read of rows [a, b) decodes chunks
a // C .. ceil(b / C) - 1 into one (chunks * C, *rest) buffer and returns the (b - a) rows.
"""

from __future__ import annotations

import asyncio
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np


class ChunkError(ValueError):
    """A chunk is missing, damaged or undecodable (the caller names the array)."""


Post = Callable[[np.ndarray], np.ndarray] | None  # a row-wise transform of decoded rows
THREADS = min(4, os.cpu_count() or 1)  # decoding threads: one per core, no gain past 4

_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own
_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process's decoding threads (made again in a forked child, e.g. a loader worker)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="kdpipe-decode"))
        return _pool[1]


def plan(arr: Any) -> Any | None:
    """The numcodecs Blosc of ``arr`` if this module can read it (the format's codec chain,
    chunks whole along every axis but the first), else None: read it with zarr."""
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec
    from zarr.core.chunk_grids import RegularChunkGrid

    meta = arr.metadata
    if getattr(meta, "zarr_format", 2) != 3 or not isinstance(meta.chunk_grid, RegularChunkGrid):
        return None
    codecs = meta.codecs
    if len(codecs) != 3 or not (
        isinstance(codecs[0], BytesCodec)
        and isinstance(codecs[1], BloscCodec)
        and isinstance(codecs[2], Crc32cCodec)
    ):
        return None
    dtype = np.dtype(arr.dtype)
    endian = codecs[0].endian
    little = endian is None or endian.value == "little"
    if dtype.kind not in "uif" or not little or dtype.byteorder == ">" or not arr.shape:
        return None
    if tuple(meta.chunk_grid.chunk_shape[1:]) != tuple(arr.shape[1:]):
        return None
    return codecs[1]._blosc_codec


def _decode(raw: np.ndarray, blosc: Any, out: np.ndarray, key: str, post: Post) -> None:
    """CRC32C-check one chunk object (uint8), blosc-decode it into ``out`` and apply
    ``post`` to it (in a decoding thread)."""
    import google_crc32c

    body = raw[:-4].view()
    body.flags.writeable = False  # google_crc32c takes read-only buffers only
    if len(raw) < 4 or google_crc32c.value(body) != struct.unpack("<I", raw[-4:].tobytes())[0]:
        raise ChunkError(f"chunk {key}: checksum mismatch (damaged or truncated)")
    try:
        size = struct.unpack_from("<I", body, 4)[0]  # blosc header: bytes 4-8, decoded size
        if size != out.nbytes:  # (a smaller chunk would leave rows undefined)
            raise ValueError(f"{size} bytes, the chunk shape needs {out.nbytes}")
        blosc.decode(body, out=out)
    except Exception as e:  # blosc raises plain Exceptions/ValueErrors on corrupt input
        raise ChunkError(f"chunk {key}: cannot decode: {e}") from None
    if post is not None:
        out[...] = post(out)


def _read_decode(file: Path, blosc: Any, out: np.ndarray, key: str, post: Post) -> None:
    """``_decode`` of the chunk in a local ``file``."""
    try:
        raw = np.frombuffer(file.read_bytes(), dtype=np.uint8)
    except FileNotFoundError:
        raise ChunkError(f"chunk {key} is missing") from None
    _decode(raw, blosc, out, key, post)


async def _read_one(arr: Any, blosc: Any, a: int, b: int, post: Post) -> np.ndarray:
    """Rows [a, b) (within the array) of ``arr``, whose codec is ``blosc`` (see ``plan``)."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    c = arr.metadata.chunk_grid.chunk_shape[0]
    first, last = a // c, -(-b // c)
    rest = tuple(arr.shape[1:])
    buf = np.empty(((last - first) * c, *rest), dtype=arr.dtype)  # whole chunks
    store, path = arr.store_path.store, arr.store_path.path
    loop, pool_ = asyncio.get_running_loop(), pool()
    zeros = (0,) * len(rest)
    names = arr.metadata.encode_chunk_key
    root = getattr(store, "root", None) if isinstance(store, LocalStore) else None

    async def chunk(i: int) -> None:
        name = names((i, *zeros))  # e.g. c/3/0
        key = f"{path}/{name}".lstrip("/")
        out = buf[(i - first) * c : (i - first + 1) * c]
        if root is not None:  # a local file: read it in the decoding thread too
            await loop.run_in_executor(pool_, _read_decode, root / key, blosc, out, name, post)
            return
        got = await store.get(key, prototype=default_buffer_prototype())
        if got is None:
            raise ChunkError(f"chunk {name} is missing")
        await loop.run_in_executor(pool_, _decode, got.as_numpy_array(), blosc, out, name, post)

    await asyncio.gather(*(chunk(i) for i in range(first, last)))
    return buf[a - first * c : b - first * c]


async def read_rows(arr: Any, a: int, b: int, post: Post = None) -> np.ndarray:
    """Rows [a, b) of ``arr`` (clipped to its length) as a numpy array; ``post`` (a row-wise
    transform, e.g. ``coding.delta_decode``) is applied chunk by chunk as they decode."""
    n = arr.shape[0]
    a, b = max(0, min(a, n)), max(0, min(b, n))
    blosc = plan(arr)
    if blosc is None or b <= a:
        got = np.asarray(await arr._async_array.getitem(slice(a, b)))
        return got if post is None or not got.size else post(got)
    return await _read_one(arr, blosc, a, b, post)
