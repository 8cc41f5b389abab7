"""``copy_store``: copy the committed parts of a store (local <-> fsspec URL), re-chunking.

The copy keeps the root record (metadata, creation time) and each part's id and commit
record, with the chunk shapes updated: checksums are of the decoded arrays, so they still
hold after re-chunking, and every array is checked against them on the way. Parts the
destination already has committed are skipped (an interrupted copy resumes), and so are
parts whose utterances it already holds (copying into a store with the same fingerprint
adds only what is new; a part that overlaps it in part is refused). The destination may
not be the source, nor lie inside it or hold it (``kdpipe.outputs``). The
destination is sealed at the end, so it can be served over HTTP. Arrays are copied as
stored (a format 1 store stays format 1) and re-encoded with the current codecs.
"""

from __future__ import annotations

import copy as _copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import outputs, zarrio
from kdpipe.errors import ConfigError, FingerprintMismatch, StoreIntegrityError
from kdpipe.store import arrayio, spec
from kdpipe.store.parts import log_commit, scan, seal
from kdpipe.store.reader import StoreReader


@dataclass(frozen=True)
class CopyReport:
    parts_copied: int
    parts_skipped: int
    utterances: int
    frames: int


def _ids(utf8: np.ndarray, offsets: np.ndarray) -> list[str]:
    raw = utf8.tobytes()
    return [raw[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(len(offsets) - 1)]


def _chunk_len(path: str, data: np.ndarray, chunk_rows: int) -> int:
    flat = data.ndim == 1 and path.endswith(("indices", "values"))
    return chunk_rows * (8 if flat else 1)


def copy_store(
    src: str | Path,
    dst: str | Path,
    *,
    src_options: dict[str, Any] | None = None,
    dst_options: dict[str, Any] | None = None,
    chunk_rows: int | None = None,
    overwrite: bool = False,
) -> CopyReport:
    """Copy ``src`` to ``dst``; ``chunk_rows`` re-chunks (rows per chunk; None keeps them)."""
    import zarr

    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError(f"copy: chunk_rows must be >= 1, got {chunk_rows}")
    outputs.claim_output(
        dst, makes=outputs.TARGET_STORE, inputs=[src], overwrite=overwrite,
        storage_options=dst_options,
    )  # fmt: skip
    s_store = zarrio.open_store(src, "r", src_options)
    s_root = (arrayio.read_json_many(s_store, ["zarr.json"])[0] or {}).get("attributes") or {}
    meta, rec = spec.parse_root(s_root, str(src))
    found = scan(s_store, src, meta, version=rec["version"])
    d_store = zarrio.open_store(dst, "a", dst_options)
    d_doc = arrayio.read_json_many(d_store, ["zarr.json"])[0]
    if d_doc is not None and not overwrite:
        _, d_rec = spec.parse_root(d_doc.get("attributes") or {}, str(dst))
        if (d_rec["fingerprint"], d_rec["version"]) != (rec["fingerprint"], rec["version"]):
            raise FingerprintMismatch(
                f"{dst}: holds a store with other metadata or format version than {src}"
            )
        done = {p.id for p in scan(d_store, dst, meta, version=rec["version"]).parts}
        there = set(
            StoreReader(dst, storage_options=dst_options, allow_duplicates=True).ids
        )  # fmt: skip
    else:
        if d_doc is not None:  # overwrite
            zarr.open_group(d_store, mode="w", zarr_format=3)  # deletes it
        arrayio.create_root(d_store, rec)
        done, there = set(), set()
    copied = utts = frames = 0
    for part in found.parts:
        if part.id in done:  # an interrupted copy resumes
            continue
        prefix = f"parts/{part.id}"
        record = _copy.deepcopy(part.record)
        paths = list(part.arrays)
        arrays = arrayio.open_arrays(s_store, [f"{prefix}/{p}" for p in paths])
        got = arrayio.read_slices(
            arrays, [Ellipsis] * len(paths), [f"{src}: part {part.id}: array {p}" for p in paths]
        )
        todo = {}
        for path, arr, data in zip(paths, arrays, got, strict=True):
            if arrayio.sha256(data) != part.arrays[path]["sha256"]:
                raise StoreIntegrityError(
                    f"{src}: part {part.id}: array {path}: sha256 differs from the commit record"
                )
            chunk = arr.chunks[0] if chunk_rows is None else _chunk_len(path, data, chunk_rows)
            todo[path] = (data, chunk)
            record["arrays"][path]["chunks"] = [max(1, min(len(data), chunk)), *data.shape[1:]]
        ids = _ids(todo["index/ids/utf8"][0], todo["index/ids/offsets"][0])
        if not (already := there.intersection(ids)):
            there.update(ids)
        elif len(already) == len(set(ids)):
            continue  # another part of the destination (or of the source) holds them all
        else:
            raise StoreIntegrityError(
                f"{dst}: already holds {len(already)} of the {len(ids)} utterances of part "
                f"{part.id} of {src} (e.g. {sorted(already)[0]}): copy into a new store"
            )
        objects, group_json, _ = arrayio.build_part(todo, {spec.PART_ATTR: record})
        arrayio.put_many(d_store, {f"{prefix}/{k}": v for k, v in objects.items()})
        arrayio.put_many(d_store, {f"{prefix}/zarr.json": group_json})  # the commit, last
        log_commit(d_store, record)
        copied += 1
        utts += part.num_utterances
        frames += part.num_frames
    seal(dst, dst_options)
    return CopyReport(copied, len(found.parts) - copied, utts, frames)
