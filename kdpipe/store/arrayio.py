"""Low-level store I/O: list, read JSON and many arrays at once, write arrays, hash.

Everything here talks to a zarr ``Store`` (local or fsspec, opened by ``kdpipe.zarrio``) and
turns the errors of zarr, blosc and the filesystem into ``StoreIntegrityError`` naming what
could not be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from kdpipe.errors import StoreError, StoreIntegrityError
from kdpipe.store import spec
from kdpipe.store.chunkio import ChunkedArray, ChunkError, read_rows
from kdpipe.store.coding import codecs


def run(coro: Any) -> Any:
    from zarr.core.sync import sync

    return sync(coro)


@contextlib.contextmanager
def reading(where: str) -> Iterator[None]:
    """Re-raise anything a damaged or missing object causes as ``StoreIntegrityError``."""
    try:
        yield
    except StoreError:
        raise
    except (ValueError, RuntimeError, OSError, KeyError, TypeError, EOFError) as e:
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise StoreIntegrityError(f"{where}: cannot read: {msg}") from None
    except Exception as e:  # numcodecs/blosc raise plain Exceptions on corrupt input
        if type(e).__module__.split(".")[0] in ("numcodecs", "blosc", "zarr", "google_crc32c"):
            raise StoreIntegrityError(f"{where}: cannot read: {e}") from None
        raise


def list_dir(store: Any, prefix: str) -> list[str]:
    async def go() -> list[str]:
        return [k async for k in store.list_dir(prefix)]

    return sorted(run(go()))


def list_prefix(store: Any, prefix: str) -> set[str]:
    async def go() -> set[str]:
        return {k async for k in store.list_prefix(prefix)}

    return run(go())


def _name(store: Any, key: str) -> str:
    """``key`` under the store's location (a local root or an fsspec path), for messages."""
    root = getattr(store, "root", None) or getattr(store, "path", None)
    return f"{str(root).rstrip('/')}/{key}" if root else key


def read_json_many(store: Any, keys: Sequence[str]) -> list[dict[str, Any] | None]:
    """JSON documents at ``keys`` (None where missing), fetched concurrently. Each is zarr
    metadata: a JSON object whose ``attributes``, where present, are an object too
    (``StoreIntegrityError`` otherwise, so callers may take ``doc.get("attributes")``)."""
    from zarr.core.buffer import default_buffer_prototype

    async def one(key: str) -> dict[str, Any] | None:
        buf = await store.get(key, prototype=default_buffer_prototype())
        return None if buf is None else json.loads(buf.to_bytes())

    async def go() -> list[Any]:
        return await asyncio.gather(*(one(k) for k in keys), return_exceptions=True)

    out = []
    for key, res in zip(keys, run(go()), strict=True):
        if isinstance(res, OSError):  # the disk, not the document: the CLI names path + cause
            raise res
        if isinstance(res, Exception):
            raise StoreIntegrityError(f"{_name(store, key)}: not readable JSON: {res}")
        if res is not None and not isinstance(res, dict):
            kind = type(res).__name__
            raise StoreIntegrityError(f"{_name(store, key)}: not a JSON object ({kind})")
        if res is not None and not isinstance(res.get("attributes", {}), dict):
            raise StoreIntegrityError(f"{_name(store, key)}: attributes not a JSON object")
        out.append(res)
    return out


def open_arrays(store: Any, paths: Sequence[str], return_errors: bool = False) -> list[Any]:
    """The arrays at ``paths``, their metadata fetched concurrently: a
    ``chunkio.ChunkedArray`` for each in the format's layout, else a sync ``zarr.Array``;
    with ``return_errors`` a failure is returned in place as a ``StoreIntegrityError``."""
    from zarr import Array
    from zarr.core.array import AsyncArray
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import StorePath

    async def one(p: str) -> Any:
        buf = await store.get(f"{p}/zarr.json", prototype=default_buffer_prototype())
        if buf is None:
            raise FileNotFoundError(p)
        fast = ChunkedArray.parse(json.loads(buf.to_bytes()), store, p)
        return fast or Array(await AsyncArray.open(StorePath(store, p), zarr_format=3))

    async def go() -> list[Any]:
        return await asyncio.gather(*(one(p) for p in paths), return_exceptions=True)

    out = []
    for p, res in zip(paths, run(go()), strict=True):
        if isinstance(res, Exception):
            err = StoreIntegrityError(f"{p}: array missing or unreadable ({type(res).__name__})")
            if not return_errors:
                raise err
            out.append(err)
        else:
            out.append(res)
    return out


def read_slices(
    arrays: Sequence[Any],
    sels: Sequence[Any],
    where: Sequence[str],
    return_errors: bool = False,
    posts: Sequence[Any] | None = None,
) -> list[Any]:
    """``arrays[i][sels[i]]`` for all i, concurrently; errors name ``where[i]`` (and are
    returned in place with ``return_errors``). Row ranges and whole arrays are read by
    ``chunkio`` (threads decode, and apply ``posts[i]``, a row-wise transform, if given);
    other selections by zarr."""

    def one(a: Any, s: Any, post: Any) -> Any:
        if s is Ellipsis and a.shape:
            s = slice(0, a.shape[0])
        if isinstance(s, slice) and s.step in (None, 1) and a.shape:
            start, stop, _ = s.indices(a.shape[0])
            return read_rows(a, start, stop, post)
        assert post is None and not isinstance(a, ChunkedArray), "only row ranges here"
        return a._async_array.getitem(s)

    async def go() -> list[Any]:
        ps = posts or [None] * len(arrays)
        return await asyncio.gather(
            *(one(a, s, p) for a, s, p in zip(arrays, sels, ps, strict=True)),
            return_exceptions=True,
        )

    out: list[Any] = []
    for w, res in zip(where, run(go()), strict=True):
        if isinstance(res, BaseException):
            try:
                if isinstance(res, ChunkError):  # it names the chunk and what is wrong
                    raise StoreIntegrityError(f"{w}: {res}") from None
                with reading(w):
                    raise res
            except StoreIntegrityError as e:
                if not return_errors:
                    raise
                out.append(e)
                continue
        out.append(np.asarray(res))
    return out


def write_arrays(group: Any, arrays: dict[str, tuple[np.ndarray, int]]) -> dict[str, list]:
    """Write ``path -> (data, rows per chunk)`` under ``group`` with the format's codecs
    (``coding.codecs``), all chunks kept, the arrays concurrently; returns each array's
    chunk shape."""
    subs: dict[str, Any] = {"": group}
    for path in arrays:
        parents = path.split("/")[:-1]
        for i in range(len(parents)):
            key = "/".join(parents[: i + 1])
            if key not in subs:
                subs[key] = subs["/".join(parents[:i])].require_group(parents[i])

    async def one(path: str, data: np.ndarray, chunk_len: int) -> Any:
        parent, _, name = path.rpartition("/")
        chunks = (max(1, min(len(data), chunk_len)), *data.shape[1:])
        return await subs[parent]._async_group.create_array(
            name,
            data=data,
            chunks=chunks,
            config={"write_empty_chunks": True},
            **codecs(name, data.dtype.itemsize, math.prod(chunks) * data.dtype.itemsize),
        )

    async def go() -> list[Any]:
        return await asyncio.gather(*(one(p, d, c) for p, (d, c) in arrays.items()))

    return {p: list(a.chunks) for p, a in zip(arrays, run(go()), strict=True)}


def build_part(
    arrays: dict[str, tuple[np.ndarray, int]], attrs: dict[str, Any]
) -> tuple[dict[str, bytes], bytes, dict[str, list]]:
    """Encode a part in memory: (objects of its arrays and sub-groups by key relative to
    the part, the part group's zarr.json with ``attrs``, each array's chunk shape)."""
    import zarr
    from zarr.core.buffer import default_buffer_prototype
    from zarr.storage import MemoryStore

    mem = MemoryStore()
    group = zarr.open_group(mem, mode="w", zarr_format=3)
    chunks = write_arrays(group, arrays)
    group.update_attributes(attrs)

    async def go() -> dict[str, bytes]:
        keys = [k async for k in mem.list()]
        bufs = await asyncio.gather(*(mem.get(k, default_buffer_prototype()) for k in keys))
        return {k: b.to_bytes() for k, b in zip(keys, bufs, strict=True) if b is not None}

    objects = run(go())
    return objects, objects.pop("zarr.json"), chunks


def put_many(store: Any, objects: dict[str, bytes]) -> None:
    """Write ``key -> bytes`` objects to ``store`` concurrently (one request each)."""
    from zarr.core.buffer import default_buffer_prototype

    proto = default_buffer_prototype()

    async def go() -> None:
        await asyncio.gather(
            *(store.set(k, proto.buffer.from_bytes(v)) for k, v in objects.items())
        )

    run(go())


def create_root(store: Any, record: dict[str, Any], parts_exist: bool = False) -> None:
    """Write the ``parts`` group (and the commit log's, ``spec.COMMITS``), then the root
    group holding ``record``: each document in one write, so a reader never sees a root
    record without its parts group."""
    group: dict[str, Any] = {"zarr_format": 3, "node_type": "group", "attributes": {}}
    if not parts_exist:
        empty = json.dumps(group).encode()
        put_many(store, {"parts/zarr.json": empty, f"{spec.COMMITS}/zarr.json": empty})
        record = {**record, spec.COMMIT_LOG_KEY: True}  # a log lost later is then told
    group["attributes"] = {spec.ROOT_ATTR: record}
    put_many(store, {"zarr.json": json.dumps(group).encode()})


def sha256(data: np.ndarray) -> str:
    """sha256 of an array's C-order little-endian bytes."""
    le = data.astype(data.dtype.newbyteorder("<"), copy=False)
    return hashlib.sha256(np.ascontiguousarray(le).tobytes()).hexdigest()


def chunk_keys(shape: Sequence[int], chunks: Sequence[int]) -> list[str]:
    """The chunk keys (default encoding, '/' separator) of an array."""
    if any(s == 0 for s in shape):
        return []
    grids = [range(math.ceil(s / c)) for s, c in zip(shape, chunks, strict=True)]
    return ["c/" + "/".join(map(str, ix)) for ix in itertools.product(*grids)]


def missing_chunks(store: Any, prefix: str, arrays: dict[str, dict[str, Any]]) -> list[str]:
    """Chunk objects a committed part should hold but does not (one listing of the part)."""
    present = list_prefix(store, prefix)
    missing = []
    for path, rec in arrays.items():
        for key in chunk_keys(rec["shape"], rec["chunks"]):
            full = f"{prefix}/{path}/{key}"
            if full not in present:
                missing.append(full)
    return missing
