"""Checked chunked arrays, shared by the feature store and the target store.

Both stores keep their arrays in one layout (docs/store-format.md, section 2): chunked along
the first axis only, codecs ``CHECKED_CHAIN`` (little-endian bytes -> blosc -> crc32c), so
that every read of a damaged chunk fails. zarr 3.1 reads such slices at about 18 M
frames/s on our 2-core machine (top-8 rows: uint16 ids, uint8 codes, tail), what one
thread decoding the chunks in turn gives, although blosc releases the GIL; two threads
reading and decoding the same files give ~33 M. So this module reads arrays in that layout
itself: ``ChunkedArray`` is parsed from the array's ``zarr.json`` (zarr's own metadata
objects cost ~0.6 ms an array to open), every chunk of a read is fetched at once (through
zarr's store: local or fsspec) and handed to a pool of threads that checks its CRC32C and
blosc-decodes it straight into its place in the result (a local file is read in that
thread too). Arrays in any other layout are read by zarr (the caller opens them).

``checked_codecs`` are the ``create_array`` arguments of that chain and ``sha256`` the
digest of a whole array that both stores record when they commit it.

Shapes: an array (N, *rest) chunked (C, *rest); a read of rows [a, b) decodes chunks
a // C .. ceil(b / C) - 1 into one (chunks * C, *rest) buffer and returns the (b - a) rows
(a view of it, or a copy when they are under half of it, so that reading one utterance
does not keep whole chunks alive).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

CHECKED_CHAIN = ("bytes", "blosc", "crc32c")  # the codecs of every checked array, in order


class ChunkError(ValueError):
    """A chunk is missing, damaged or undecodable (the caller names the array)."""


Post = Callable[[np.ndarray], np.ndarray] | None  # a row-wise transform of decoded rows
THREADS = min(4, os.cpu_count() or 1)  # decoding is CPU-bound: a thread per core, at most
# 4 so that several data-loader workers, each with its own pool, do not oversubscribe

_pool: tuple[int, ThreadPoolExecutor] | None = None  # (pid, pool): a forked child makes its own
_lock = threading.Lock()


def pool() -> ThreadPoolExecutor:
    """The process's decoding threads (made again in a forked child, e.g. a loader worker)."""
    global _pool
    with _lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (os.getpid(), ThreadPoolExecutor(THREADS, thread_name_prefix="kdpipe-decode"))
        return _pool[1]


def checked_codecs(
    itemsize: int, chunk_bytes: int, *, shuffle: str = "bitshuffle", clevel: int = 5
) -> dict[str, Any]:
    """Keyword arguments of zarr's ``create_array`` for an array in ``CHECKED_CHAIN``:
    blosc zstd (level ``clevel``, in blocks of a whole chunk up to 2 MiB), then crc32c."""
    from zarr.codecs import BloscCodec, Crc32cCodec

    blosc = BloscCodec(
        cname="zstd",
        clevel=clevel,
        shuffle=shuffle,  # type: ignore[arg-type]
        typesize=itemsize,
        blocksize=min(max(chunk_bytes, itemsize), 1 << 21),
    )
    return {"filters": None, "compressors": [blosc, Crc32cCodec()]}


def sha256(data: np.ndarray) -> str:
    """sha256 of an array's C-order little-endian bytes."""
    le = data.astype(data.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(np.ascontiguousarray(le).tobytes()).hexdigest()


@dataclass(frozen=True, eq=False)
class ChunkedArray:
    """An array in the checked layout, read by this module. It has the attributes of a
    ``zarr.Array`` that the store code uses: ``shape``, ``dtype``, ``chunks``."""

    store: Any  # zarr Store
    path: str  # the array's key prefix in the store
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...]  # (C, *shape[1:])
    separator: str  # of chunk keys: c/3/0

    @classmethod
    def parse(cls, doc: dict[str, Any], store: Any, path: str) -> ChunkedArray | None:
        """From the array's ``zarr.json``, or None if it is not in the checked layout."""
        try:
            codecs = [c["name"] for c in doc["codecs"]]
            endian = (doc["codecs"][0].get("configuration") or {}).get("endian", "little")
            grid, keys = doc["chunk_grid"], doc["chunk_key_encoding"]
            shape = tuple(int(n) for n in doc["shape"])
            chunks = tuple(int(n) for n in grid["configuration"]["chunk_shape"])
            name = doc["data_type"]  # (the bytes codec stores little-endian)
            dtype = np.dtype(name).newbyteorder("<") if isinstance(name, str) else None
            sep = (keys.get("configuration") or {}).get("separator", "/")
        except (KeyError, TypeError, ValueError, IndexError, AttributeError):
            return None
        if not (
            doc.get("zarr_format") == 3
            and doc.get("node_type") == "array"
            and not doc.get("storage_transformers")
            and tuple(codecs) == CHECKED_CHAIN
            and endian in ("little", None)
            and grid.get("name") == "regular"
            and keys.get("name") == "default"
            and sep in ("/", ".")
            and dtype is not None
            and dtype.kind in "uif"
            and len(shape) >= 1
            and len(chunks) == len(shape)
            and chunks[0] >= 1
            and chunks[1:] == shape[1:]
        ):
            return None
        return cls(store, path, shape, dtype, chunks, sep)

    @classmethod
    async def load(cls, store: Any, path: str) -> tuple[dict[str, Any] | None, Any]:
        """(the array's ``zarr.json`` as a dict or None where missing, the parsed array or
        None); ``ValueError`` for a document that is not JSON."""
        from zarr.core.buffer import default_buffer_prototype

        got = await store.get(f"{path}/zarr.json", prototype=default_buffer_prototype())
        if got is None:
            return None, None
        doc = json.loads(got.to_bytes())
        if not isinstance(doc, dict):
            raise ValueError(f"{path}/zarr.json is not a JSON object")
        return doc, cls.parse(doc, store, path)

    def key(self, i: int) -> str:
        """The name of chunk ``i`` (rows i*C ...) under the array, e.g. ``c/3/0``."""
        return self.separator.join(["c", str(i), *("0" * (len(self.shape) - 1))])


def _decode(raw: np.ndarray, blosc: Any, out: np.ndarray, key: str, post: Post) -> None:
    """CRC32C-check one chunk object (uint8), blosc-decode it into ``out`` and apply
    ``post`` to it (in a decoding thread)."""
    import google_crc32c

    body = raw[:-4].view()
    body.flags.writeable = False  # google_crc32c takes read-only buffers only
    if len(raw) < 4 or google_crc32c.value(body) != struct.unpack("<I", raw[-4:].tobytes())[0]:
        raise ChunkError(f"chunk {key}: checksum mismatch (damaged or truncated)")
    try:
        size = struct.unpack_from("<I", body.data, 4)[0]  # blosc header: bytes 4-8, decoded size
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


async def _read_chunked(arr: ChunkedArray, a: int, b: int, post: Post) -> np.ndarray:
    """Rows [a, b) (within the array) of ``arr``."""
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import LocalStore

    c = arr.chunks[0]
    first, last = a // c, -(-b // c)
    buf = np.empty(((last - first) * c, *arr.shape[1:]), dtype=arr.dtype)  # whole chunks
    loop, pool_, blosc = asyncio.get_running_loop(), pool(), _blosc()
    root = Path(arr.store.root) if isinstance(arr.store, LocalStore) else None

    async def chunk(i: int) -> None:
        name = arr.key(i)
        key = f"{arr.path}/{name}".lstrip("/")
        out = buf[(i - first) * c : (i - first + 1) * c]
        if root is not None:  # a local file: read it in the decoding thread too
            await loop.run_in_executor(pool_, _read_decode, root / key, blosc, out, name, post)
            return
        got = await arr.store.get(key, prototype=default_buffer_prototype())
        if got is None:
            raise ChunkError(f"chunk {name} is missing")
        await loop.run_in_executor(pool_, _decode, got.as_numpy_array(), blosc, out, name, post)

    await asyncio.gather(*(chunk(i) for i in range(first, last)))
    rows = buf[a - first * c : b - first * c]
    return rows if 2 * len(rows) >= len(buf) else rows.copy()  # few rows: free the chunks


def _blosc() -> Any:
    """A blosc decoder: decoding needs no settings (each chunk's header has them)."""
    from numcodecs import Blosc

    return Blosc()


async def read_rows(arr: Any, a: int, b: int, post: Post = None) -> np.ndarray:
    """Rows [a, b) of ``arr`` (a ``ChunkedArray`` or a ``zarr.Array``; clipped to its
    length) as a numpy array; ``post`` (a row-wise transform, e.g. ``coding.delta_decode``)
    is applied to the decoded rows (chunk by chunk, in the decoding threads)."""
    n = arr.shape[0]
    a, b = max(0, min(a, n)), max(0, min(b, n))
    if isinstance(arr, ChunkedArray):
        if b <= a:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        return await _read_chunked(arr, a, b, post)
    got = np.asarray(await arr._async_array.getitem(slice(a, b)))
    return got if post is None or not got.size else post(got)


def run(coro: Any) -> Any:
    """Run a coroutine of this module (or of zarr's store) to its end, from sync code,
    on zarr's event loop."""
    from zarr.core.sync import sync

    return sync(coro)
