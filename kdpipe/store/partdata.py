"""``PartData``: the data arrays of one committed part, read by utterance ranges.

Sequential reads keep, per array, the decoded rows from the last chunk-aligned read, so a
stream of consecutive ranges decodes every chunk exactly once. Row-delta coded values
(format 2) are turned back into codes (``coding.delta_decode``): chunk by chunk as they are
read for fixed-width rows, per range read for variable-width rows.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.errors import StoreIntegrityError
from kdpipe.sparse import SparseRows
from kdpipe.store import arrayio
from kdpipe.store.block import TargetBlock
from kdpipe.store.chunkio import ChunkedArray
from kdpipe.store.coding import ROW_DELTA, delta_decode

if TYPE_CHECKING:
    from kdpipe.store.reader import StoreReader


class PartData:
    """Lazily opened arrays of part ``i`` of ``reader`` (see the module docstring)."""

    def __init__(self, reader: StoreReader, i: int, f_off: np.ndarray, ids: list[str]) -> None:
        part = reader.parts[i]
        self.reader, self.part, self.f_off, self.ids = reader, part, f_off, ids
        self.at = f"{reader.location}: part {part.id}"
        self.index = reader._index_cols[i]
        prefix = f"parts/{part.id}"
        paths = [p for p in part.arrays if not p.startswith("index/")]
        opened = arrayio.open_arrays(reader._store, [f"{prefix}/{p}" for p in paths])
        if reader._check_chunks and not all(isinstance(a, ChunkedArray) for a in opened):
            # zarr would read a missing chunk as fill values (chunkio refuses it): list first
            missing = arrayio.missing_chunks(reader._store, prefix, part.arrays)
            if missing:
                key = missing[0].removeprefix(prefix + "/")
                raise StoreIntegrityError(
                    f"{self.at}: array {key.rsplit('/c/', 1)[0]}: chunk {key} is missing "
                    f"({len(missing)} missing in the part)"
                )
        self.arrays = dict(zip(paths, opened, strict=True))
        for p, arr in self.arrays.items():
            rec = part.arrays[p]
            if list(arr.shape) != rec["shape"] or arr.dtype.name != rec["dtype"]:
                raise StoreIntegrityError(
                    f"{self.at}: array {p}: shape/dtype {arr.shape} "
                    f"{arr.dtype} disagrees with the commit record"
                )
        self._win: dict[str, tuple[int, int, np.ndarray]] = {}  # path -> rows [lo, hi)
        self.delta = reader.transform == ROW_DELTA

    def _post(self, path: str) -> Any:
        """Row-delta values of fixed-width rows are decoded chunk by chunk as they are read
        (in the decoding threads); variable-width rows span chunks: decoded in ``_rows``."""
        base = path.rpartition("/")[0] + "/"
        fixed = base + "row_offsets" not in self.arrays
        return delta_decode if fixed and path.endswith("/values") and self.delta else None

    def _fetch(self, reqs: dict[str, tuple[int, int]], sequential: bool) -> dict[str, Any]:
        out: dict[str, np.ndarray] = {}
        todo: dict[str, tuple[int, int, int, np.ndarray | None]] = {}
        for p, (a, b) in reqs.items():
            lo, hi, buf = self._win.get(p, (0, 0, None))
            if buf is not None and lo <= a and b <= hi:
                out[p] = buf[a - lo : b - lo]
                continue
            arr = self.arrays[p]
            if not sequential:
                todo[p] = (a, a, b, None)
                continue
            c, n = arr.chunks[0], arr.shape[0]
            keep = buf[a - lo :] if buf is not None and lo <= a <= hi else None
            start = hi if keep is not None else a // c * c
            todo[p] = (a if keep is not None else start, start, min(n, math.ceil(b / c) * c), keep)
        if todo:
            names = list(todo)
            got = arrayio.read_slices(
                [self.arrays[p] for p in names],
                [slice(todo[p][1], todo[p][2]) for p in names],
                [f"{self.at}: array {p}" for p in names],
                posts=[self._post(p) for p in names],
            )
            for p, fresh in zip(names, got, strict=True):
                lo, _, hi, keep = todo[p]
                buf = fresh if keep is None or not len(keep) else np.concatenate([keep, fresh])
                a, b = reqs[p]
                if sequential:
                    self._win[p] = (lo, hi, buf)
                out[p] = buf[a - lo : b - lo]
        return out

    def _rows(self, base: str, a: int, b: int, data: dict, flat: dict) -> SparseRows:
        r = self.reader
        c = r.meta.num_classes
        offsets = None
        if base + "row_offsets" in data:
            ro = data[base + "row_offsets"]
            offsets = ro - ro[0]
        ix = flat.get(base + "indices", data.get(base + "indices"))
        vals = flat.get(base + "values", data.get(base + "values"))
        if self.delta and offsets is not None:  # (fixed rows were decoded on reading)
            vals = delta_decode(vals, offsets)  # a new array: the window keeps what is stored
        if ix is not None and ix.size and np.iinfo(ix.dtype).max >= c and int(ix.max()) >= c:
            bad = ix >= c
            if bad.any():
                row = (
                    int(np.nonzero(bad)[0][0])
                    if offsets is None
                    else int(
                        np.searchsorted(offsets, np.nonzero(bad.ravel())[0][0], side="right") - 1
                    )
                )
                self._fail(base + "indices", a + row, f"class index {int(ix.max())} >= {c}")
        return SparseRows(
            values=vals,
            tail=data[base + "tail"],
            num_classes=c,
            indices=ix,
            offsets=offsets,
            codebook=r.codebook,
        )

    def _fail(self, path: str, row: int, msg: str) -> None:
        level = path.split("/")[-2]
        u = row if level == "utt" else int(np.searchsorted(self.f_off, row, side="right") - 1)
        raise StoreIntegrityError(f"{self.at}: utterance {self.ids[u]}: array {path}: {msg}")

    def read_range(self, u: int, e: int, *, members: bool, sequential: bool) -> TargetBlock:
        """Utterances [u, e) of the part (positions in the part)."""
        meta = self.reader.meta
        a, b = int(self.f_off[u]), int(self.f_off[e])
        span = {"frame": (a, b), "utt": (u, e)}
        srcs = [""] + ([f"members/{j}/" for j in range(len(meta.members))] if members else [])
        bases = [f"{s}{lv}/" for s in srcs for lv in meta.levels]
        reqs: dict[str, tuple[int, int]] = {}
        for base in bases:
            lo, hi = span[base.split("/")[-2]]
            for name in ("indices", "values", "tail", "hard", "row_offsets"):
                if base + name in self.arrays and not (
                    name in ("indices", "values") and base + "row_offsets" in self.arrays
                ):
                    reqs[base + name] = (lo, hi + (name == "row_offsets"))
        data = self._fetch(reqs, sequential)
        flat_reqs = {}
        for base in bases:
            if base + "row_offsets" in data:
                ro = data[base + "row_offsets"]
                n = self.arrays[base + "values"].shape[0]
                if (np.diff(ro) < 0).any() or ro[0] < 0 or ro[-1] > n:
                    self._fail(base + "row_offsets", span[base.split("/")[-2]][0], "bad offsets")
                for name in ("indices", "values"):
                    flat_reqs[base + name] = (int(ro[0]), int(ro[-1]))
        flat = self._fetch(flat_reqs, sequential) if flat_reqs else {}
        rows = {base: self._rows(base, *span[base.split("/")[-2]], data, flat) for base in bases}
        hard = {lv: data.get(f"{lv}/hard") for lv in ("frame", "utt")}
        for lv, h in hard.items():
            if h is not None and h.size:
                bad = (h >= meta.num_classes) & (h != np.iinfo(h.dtype).max)
                if bad.any():
                    row = span[lv][0] + int(np.nonzero(bad)[0][0])
                    self._fail(f"{lv}/hard", row, "hard label out of range")
        nm = len(meta.members) if members else 0
        return TargetBlock(
            ids=tuple(self.ids[u:e]),
            frame_offsets=self.f_off[u : e + 1] - a,
            subsampling=self.index["subsampling"][u:e],
            frame_shift_ms=self.index["frame_shift_ms"][u:e],
            input_window=self.index["input_window"][u:e],
            frame=rows.get("frame/"),
            utt=rows.get("utt/"),
            hard_frame=hard["frame"],
            hard_utt=hard["utt"],
            members_frame=tuple(
                rows[f"members/{j}/frame/"] for j in range(nm) if "frame" in meta.levels
            ),
            members_utt=tuple(rows[f"members/{j}/utt/"] for j in range(nm) if "utt" in meta.levels),
        )
