"""The feature store's arrays on disk: each created in the checked layout of
``kdpipe.chunks`` (a CRC32C per chunk), recorded in ``attrs.arrays`` (shape, dtype, chunks,
sha256), opened against that record, read by rows or whole with damage reported as one
``StoreIntegrityError`` naming the store and the array, string columns, and the
structural checks (offsets, ids, labels) that opening and ``kdpipe corpus verify`` share.
The store itself (its layout, writer and reader) is ``featstore``."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.chunks import ChunkedArray, ChunkError, checked_codecs, read_rows, sha256
from kdpipe.chunks import run as run_sync
from kdpipe.errors import StoreError, StoreIntegrityError
from kdpipe.zarrio import is_url, open_group

ZSTD_LEVEL = 3  # of the frame arrays: prepare writes them at ~100 MB/s on one core
ARRAYS_ATTR = "arrays"  # {path: {shape, dtype, chunks, sha256}}: the record of the content
STRING_COLUMNS = ("ids", "speakers", "texts")  # each a utf8 + offsets pair of arrays


def create_group(location: str | Path, overwrite: bool) -> Any:
    """A new empty Zarr group; refuses to replace anything that is not a Zarr store."""
    p = Path(str(location).removeprefix("file://"))
    if not is_url(location) and p.exists() and overwrite:
        if not (p.is_dir() and (p / "zarr.json").is_file()):
            raise StoreError(f"{p} exists and is not a Zarr store; refusing to replace it")
        shutil.rmtree(p)
    try:
        return open_group(location, mode="w" if overwrite else "w-")
    except FileExistsError:
        raise StoreError(f"{location} already exists; pass --overwrite to replace it") from None


# --- the arrays: written and read in the checked layout of kdpipe.chunks --------------

FRAME_ARRAYS = ("feats", "frame_labels")  # (T_total, ...): read in row ranges, never whole


def create_array(group: Any, path: str, chunks: tuple[int, ...], dtype: str) -> Any:
    """An empty growable frame array in the checked layout (every chunk written, zeros too:
    the checked reader refuses a missing chunk)."""
    size = int(np.prod(chunks)) * np.dtype(dtype).itemsize
    return group.create_array(
        path,
        shape=(0, *chunks[1:]),
        chunks=chunks,
        dtype=dtype,
        config={"write_empty_chunks": True},
        **checked_codecs(np.dtype(dtype).itemsize, size, clevel=ZSTD_LEVEL),
    )


def array_record(shape: Any, dtype: Any, chunks: Any, digest: str) -> dict[str, Any]:
    return {
        "shape": [int(n) for n in shape],
        "dtype": np.dtype(dtype).name,
        "chunks": [int(n) for n in chunks],
        "sha256": digest,
    }


def write_array(group: Any, path: str, data: np.ndarray, record: dict[str, Any]) -> None:
    """Write a whole (N, ...) array in the checked layout, one chunk, into ``record``."""
    chunks = (max(1, len(data)), *data.shape[1:])
    group.create_array(
        path,
        data=data,
        chunks=chunks,
        config={"write_empty_chunks": True},
        **checked_codecs(data.dtype.itemsize, max(1, data.nbytes)),
    )
    record[path] = array_record(data.shape, data.dtype, chunks, sha256(data))


def encode_strings(values: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """A string column: (uint8 UTF-8 bytes, int64 offsets of length N + 1)."""
    encoded = [v.encode("utf-8") for v in values]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    if encoded:
        offsets[1:] = np.cumsum([len(b) for b in encoded])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


def decode_strings(data: dict[str, np.ndarray], name: str) -> list[str]:
    """The string column ``name`` of arrays read whole (``structure_problems`` checked it)."""
    raw, off = data[f"{name}/utf8"].tobytes(), data[f"{name}/offsets"].tolist()
    return [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]


def array_paths(attrs: dict[str, Any], has: Any) -> list[str]:
    """Every array a store of ``attrs`` holds; ``has(name)`` tells whether an optional
    column (the transcripts) is there in a store without a record."""
    task, record = attrs.get("task"), attrs.get(ARRAYS_ATTR)
    texts = ("texts/utf8" in record) if isinstance(record, dict) else has("texts")
    paths = ["offsets", "split", "durations", "cmvn/mean", "cmvn/std", "feats"]
    paths += ["clip_labels"] if task == "clip" else ["frame_labels"] if task == "frame" else []
    for name in STRING_COLUMNS:
        if name != "texts" or texts:
            paths += [f"{name}/utf8", f"{name}/offsets"]
    return paths


def open_arrays(
    group: Any, location: str, attrs: dict[str, Any], problems: list[str] | None = None
) -> dict[str, Any]:
    """path -> array (``ChunkedArray``; a zarr array in a store without a record) of every
    array of the store, their metadata fetched concurrently and checked against the record.
    A failure is a ``StoreIntegrityError``, or, with ``problems``, a line appended to it
    (and the array left out)."""
    record = attrs.get(ARRAYS_ATTR)
    if record is not None and not isinstance(record, dict):
        raise StoreIntegrityError(f"{location}: attrs.{ARRAYS_ATTR} is not a record of arrays")
    paths = array_paths(attrs, lambda name: name in group)
    prefix = group.path

    async def go() -> list[Any]:
        keys = [f"{prefix}/{p}".lstrip("/") for p in paths]
        found = (ChunkedArray.load(group.store, key) for key in keys)
        return await asyncio.gather(*found, return_exceptions=True)

    out: dict[str, Any] = {}
    for path, res in zip(paths, run_sync(go()), strict=True):
        try:
            out[path] = _checked_open(group, location, path, res, record)
        except StoreIntegrityError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return out


def _checked_open(group: Any, location: str, path: str, res: Any, record: Any) -> Any:
    at = f"{location}: array {path}"
    if isinstance(res, BaseException):
        raise StoreIntegrityError(f"{at}: zarr.json unreadable ({type(res).__name__})")
    doc, fast = res
    if doc is None:
        raise StoreIntegrityError(f"{at} is missing")
    if record is None:  # written before checksums: zarr reads it
        if fast is not None:
            return fast
        with _reading(at):
            return group[path]
    rec = record.get(path)
    if not isinstance(rec, dict):
        raise StoreIntegrityError(f"{at}: not in the store's record of its arrays")
    if fast is None:
        raise StoreIntegrityError(f"{at}: zarr.json is not the checked layout (damaged?)")
    got = [list(fast.shape), fast.dtype.name, list(fast.chunks)]
    if got != [rec.get("shape"), rec.get("dtype"), rec.get("chunks")]:
        want = [rec.get("shape"), rec.get("dtype"), rec.get("chunks")]
        raise StoreIntegrityError(
            f"{at}: shape, dtype, chunks {got} differ from the record {want} (damaged?)"
        )
    return fast


def read_array(arr: Any, lo: int, hi: int, location: str, path: str) -> np.ndarray:
    """Rows [lo, hi) of one array of the store; a damaged chunk (CRC, decoding) is a
    ``StoreIntegrityError`` naming the store and the array."""
    with _reading(f"{location}: array {path}"):
        return np.asarray(run_sync(read_rows(arr, lo, hi)))


def read_whole(
    arrays: dict[str, Any],
    paths: list[str],
    location: str,
    attrs: dict[str, Any],
    problems: list[str] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays at ``paths`` read whole (concurrently), each checked against its sha256
    where the store records one; failures raise or, with ``problems``, are appended."""
    record = attrs.get(ARRAYS_ATTR) or {}

    async def go() -> list[Any]:
        reads = (read_rows(arrays[p], 0, arrays[p].shape[0]) for p in paths)
        return await asyncio.gather(*reads, return_exceptions=True)

    out: dict[str, np.ndarray] = {}
    for path, res in zip(paths, run_sync(go()), strict=True):
        at = f"{location}: array {path}"
        try:
            if isinstance(res, BaseException):
                with _reading(at):
                    raise res
            data = np.asarray(res)
            want = (record.get(path) or {}).get("sha256")
            if want is not None and sha256(data) != want:
                raise StoreIntegrityError(f"{at}: sha256 differs from the record (damaged?)")
            out[path] = data
        except StoreIntegrityError as error:
            if problems is None:
                raise
            problems.append(str(error))
    return out


@contextlib.contextmanager
def _reading(at: str) -> Iterator[None]:
    """Whatever a damaged chunk or document causes (a CRC mismatch, zstd or blosc errors,
    bad JSON) as one ``StoreIntegrityError`` line starting with ``at``."""
    try:
        yield
    except StoreError:
        raise
    except ChunkError as error:  # it names the chunk and what is wrong
        raise StoreIntegrityError(f"{at}: {error}") from None
    except Exception as error:  # zarr, numcodecs and zstd raise plain Exceptions too
        msg = " ".join(str(error).split())[:200] or type(error).__name__
        raise StoreIntegrityError(f"{at}: cannot read: {msg}") from None


def structure_problems(
    attrs: dict[str, Any], arrays: dict[str, Any], data: dict[str, np.ndarray]
) -> list[str]:
    """What is inconsistent between the attrs, the arrays' shapes and the small arrays
    read whole (``data``; arrays missing from it are not checked): offsets against the
    frames, every per-utterance column against N, labels and split codes in range, string
    columns decodable, CMVN stats finite."""
    out: list[str] = []
    offsets = data.get("offsets")
    feats = arrays.get("feats")
    dim = (attrs.get("features") or {}).get("num_mel_bins")
    if feats is not None and (len(feats.shape) != 2 or feats.shape[1] != dim):
        out.append(f"array feats: shape {list(feats.shape)}, the features say F={dim}")
    n = None
    if offsets is not None:
        n = len(offsets) - 1
        total = None if feats is None else int(feats.shape[0])
        if n < 1 or offsets[0] != 0 or (np.diff(offsets) <= 0).any():
            out.append("array offsets: not increasing from 0 (damaged?)")
        elif total is not None and int(offsets[-1]) != total:
            out.append(f"array offsets: end at frame {int(offsets[-1])}, feats has {total}")
        got = arrays["frame_labels"].shape[0] if "frame_labels" in arrays else total
        if total is not None and got != total:
            out.append(f"array frame_labels: {got} labels for {total} frames")
        if attrs.get("num_utterances") != n:
            out.append(f"{n} utterances, the attrs say {attrs.get('num_utterances')}")
    for name in ("split", "durations", "clip_labels"):
        if name in data and n is not None and len(data[name]) != n:
            out.append(f"array {name}: {len(data[name])} entries for {n} utterances")
    if "split" in data and len(data["split"]):
        names = attrs.get("split_names") or []
        if int(data["split"].max()) >= len(names):
            out.append(f"array split: a code outside the {len(names)} split names")
    labels = attrs.get("labels") or []
    if "clip_labels" in data and len(data["clip_labels"]):
        lab = data["clip_labels"]
        if int(lab.min()) < 0 or int(lab.max()) >= len(labels):
            out.append(f"array clip_labels: a label outside 0..{len(labels) - 1}")
    if "durations" in data and not np.isfinite(data["durations"]).all():
        out.append("array durations: not finite")
    for name in ("cmvn/mean", "cmvn/std"):
        if name in data and (data[name].shape != (dim,) or not np.isfinite(data[name]).all()):
            out.append(f"array {name}: not {dim} finite values")
    for name in STRING_COLUMNS:
        if f"{name}/utf8" in data and f"{name}/offsets" in data:
            raw, off = data[f"{name}/utf8"], data[f"{name}/offsets"]
            if (n is not None and len(off) != n + 1) or not len(off) or off[0] != 0:
                out.append(f"column {name}: {len(off) - 1} entries for {n} utterances")
            elif (np.diff(off) < 0).any() or int(off[-1]) != len(raw):
                out.append(f"column {name}: offsets do not fit its {len(raw)} bytes")
            else:
                try:
                    decode_strings(data, name)
                except UnicodeDecodeError as error:
                    out.append(f"column {name}: not UTF-8 ({error.reason})")
    return out
