"""``kdpipe corpus verify``: check every chunk and every recorded digest of a feature store.

What it reads: every array whole (the frame arrays in blocks of chunks), so every chunk's
CRC32C is checked, and every array's sha256 is compared with the store's record
(``attrs.arrays``, ``featstore``); then the offsets, ids, splits and labels against each
other (``featstore.structure_problems``), the frame labels against the label set, and the
features for NaN and infinity. A store written before the record (no checksums) is read
by zarr: damage zstd cannot decode is still found, any other is not, and the report says so.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.featarrays import (
    ARRAYS_ATTR,
    FRAME_ARRAYS,
    open_arrays,
    read_array,
    read_whole,
    structure_problems,
)
from kdpipe.corpus.featstore import FORMAT
from kdpipe.errors import StoreError, StoreIntegrityError
from kdpipe.zarrio import is_url, open_group

BLOCK_CHUNKS = 8  # frame-array chunks read per step: 8 x 2.5 MiB of features at a time


@dataclass
class FeatureVerifyReport:
    """What ``verify_feature_store`` found."""

    location: str
    utterances: int = 0
    frames: int = 0
    arrays: int = 0  # arrays read whole
    chunks: int = 0  # chunks read (CRC-checked where the store has checksums)
    checksums: bool = False  # False: written before checksums, none could be checked
    problems: list[str] = field(default_factory=list)  # one line each

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_feature_store(location: str | Path) -> FeatureVerifyReport:
    """Read and check the whole feature store at ``location`` (see the module docstring)."""
    where = str(location)
    rep = FeatureVerifyReport(where)
    if not is_url(where) and not Path(where).is_dir():
        rep.problems.append(f"{where}: feature store not found")
        return rep
    try:
        group = open_group(where, mode="r")
        attrs: dict[str, Any] = dict(group.attrs.asdict())
    except StoreError as error:  # a damaged root zarr.json, named by open_group
        rep.problems.append(str(error))
        return rep
    except Exception as error:  # the OS's errors and anything else zarr raises
        rep.problems.append(f"{where}: not a readable Zarr group ({type(error).__name__})")
        return rep
    if attrs.get("format") != FORMAT:
        rep.problems.append(
            f"{where}: not a complete feature store (format {attrs.get('format')!r})"
        )
        return rep
    rep.checksums = isinstance(attrs.get(ARRAYS_ATTR), dict)
    try:
        arrays = open_arrays(group, where, attrs, rep.problems)
    except StoreIntegrityError as error:
        rep.problems.append(str(error))
        return rep
    small = [p for p in arrays if p not in FRAME_ARRAYS]
    data = read_whole(arrays, small, where, attrs, rep.problems)
    rep.arrays = len(data)
    rep.chunks = sum(_num_chunks(arrays[p]) for p in data)
    rep.problems += [f"{where}: {line}" for line in structure_problems(attrs, arrays, data)]
    record = attrs.get(ARRAYS_ATTR) or {}
    num_labels = len(attrs.get("labels") or [])
    for path in FRAME_ARRAYS:
        if path in arrays:
            want = (record.get(path) or {}).get("sha256")
            if _scan(arrays[path], path, where, want, num_labels, rep):
                rep.arrays += 1
    if "offsets" in data and len(data["offsets"]):
        rep.utterances, rep.frames = len(data["offsets"]) - 1, int(data["offsets"][-1])
    return rep


def _scan(
    arr: Any, path: str, where: str, want: str | None, num_labels: int, rep: FeatureVerifyReport
) -> bool:
    """Read a frame array in blocks: CRCs, its digest, finite features, labels in range.
    False when a chunk could not be read (that problem is recorded)."""
    digest = hashlib.sha256()
    step = arr.chunks[0] * BLOCK_CHUNKS
    bad_values = 0
    for lo in range(0, arr.shape[0], step):
        try:
            block = read_array(arr, lo, lo + step, where, path)
        except StoreIntegrityError as error:
            rep.problems.append(str(error))
            return False
        rep.chunks += _num_chunks(arr, len(block))
        le = block.astype(block.dtype.newbyteorder("<"), copy=False)
        digest.update(np.ascontiguousarray(le).tobytes())
        if path == "feats":
            bad_values += int(block.size - np.isfinite(block).sum())
        elif len(block) and (int(block.min()) < 0 or int(block.max()) >= num_labels):
            rep.problems.append(
                f"{where}: array {path}: a label outside 0..{num_labels - 1} (rows {lo}..)"
            )
    if bad_values:
        rep.problems.append(f"{where}: array feats: {bad_values} NaN or infinite values")
    if want is not None and digest.hexdigest() != want:
        rep.problems.append(f"{where}: array {path}: sha256 differs from the record (damaged?)")
    return True


def _num_chunks(arr: Any, rows: int | None = None) -> int:
    n = arr.shape[0] if rows is None else rows
    return -(-n // arr.chunks[0]) if len(arr.shape) and arr.chunks[0] else 0
