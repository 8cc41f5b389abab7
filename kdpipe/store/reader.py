"""``StoreReader``: per-utterance access and fast sequential block reads of a target store.

Opening reads the root record (refusing unknown format versions), the commit records of
the committed parts and their per-utterance index. Data is read lazily, part by part
(``PartData``). Everything read is checked enough never to hand out wrong numbers: chunk
CRCs and decoded sizes (``chunkio``), missing chunks, index structure, and class indices in
range.

``PartData`` holds the data arrays of one committed part, read by utterance ranges.
Sequential reads keep, per array, the decoded rows from the last chunk-aligned read, so a
stream of consecutive ranges decodes every chunk exactly once. Row-delta coded values
(format 2) are turned back into codes (``coding.delta_decode``): chunk by chunk as they are
read for fixed-width rows, per range read for variable-width rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from itertools import repeat
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import zarrio
from kdpipe.errors import StoreError, StoreIntegrityError
from kdpipe.labels import LabelSet
from kdpipe.sparse import SparseRows
from kdpipe.store import arrayio, coding, spec
from kdpipe.store.block import TargetBlock
from kdpipe.store.chunkio import ChunkedArray
from kdpipe.store.coding import ROW_DELTA, delta_decode
from kdpipe.store.parts import PartInfo, PartScan, scan

BLOCK_FRAMES = 1 << 20  # frames per streamed block: ~25 MB decoded at k=8, few calls


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
        assert vals is not None, base  # every layout stores values
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

    def read_range(self, first: int, end: int, *, members: bool, sequential: bool) -> TargetBlock:
        """Utterances [first, end) of the part (positions in the part)."""
        meta = self.reader.meta
        frame_lo, frame_hi = int(self.f_off[first]), int(self.f_off[end])
        span = {"frame": (frame_lo, frame_hi), "utt": (first, end)}  # rows of each level
        member_dirs = [f"members/{j}/" for j in range(len(meta.members))] if members else []
        bases = [f"{source}{level}/" for source in ["", *member_dirs] for level in meta.levels]
        requests: dict[str, tuple[int, int]] = {}
        for base in bases:
            lo, hi = span[base.split("/")[-2]]
            for name in ("indices", "values", "tail", "hard", "row_offsets"):
                if base + name in self.arrays and not (
                    name in ("indices", "values") and base + "row_offsets" in self.arrays
                ):
                    requests[base + name] = (lo, hi + (name == "row_offsets"))
        data = self._fetch(requests, sequential)
        flat_requests = {}  # variable-width rows: the entries the row offsets point at
        for base in bases:
            if base + "row_offsets" in data:
                row_offsets = data[base + "row_offsets"]
                entries = self.arrays[base + "values"].shape[0]
                if (
                    (np.diff(row_offsets) < 0).any()
                    or row_offsets[0] < 0
                    or row_offsets[-1] > entries
                ):
                    self._fail(base + "row_offsets", span[base.split("/")[-2]][0], "bad offsets")
                for name in ("indices", "values"):
                    flat_requests[base + name] = (int(row_offsets[0]), int(row_offsets[-1]))
        flat = self._fetch(flat_requests, sequential) if flat_requests else {}
        rows = {base: self._rows(base, *span[base.split("/")[-2]], data, flat) for base in bases}
        hard = {level: data.get(f"{level}/hard") for level in ("frame", "utt")}
        for level, labels in hard.items():
            if labels is not None and labels.size:
                bad = (labels >= meta.num_classes) & (labels != np.iinfo(labels.dtype).max)
                if bad.any():
                    row = span[level][0] + int(np.nonzero(bad)[0][0])
                    self._fail(f"{level}/hard", row, "hard label out of range")
        num_members = len(meta.members) if members else 0
        return TargetBlock(
            ids=tuple(self.ids[first:end]),
            frame_offsets=self.f_off[first : end + 1] - frame_lo,
            subsampling=self.index["subsampling"][first:end],
            frame_shift_ms=self.index["frame_shift_ms"][first:end],
            input_window=self.index["input_window"][first:end],
            frame=rows.get("frame/"),
            utt=rows.get("utt/"),
            hard_frame=hard["frame"],
            hard_utt=hard["utt"],
            members_frame=tuple(
                rows[f"members/{j}/frame/"] for j in range(num_members) if "frame" in meta.levels
            ),
            members_utt=tuple(
                rows[f"members/{j}/utt/"] for j in range(num_members) if "utt" in meta.levels
            ),
        )


class StoreReader:
    """Read the target store at ``location`` (a path or an fsspec URL)."""

    def __init__(
        self,
        location: str | Path,
        *,
        storage_options: dict[str, Any] | None = None,
        labels: LabelSet | Sequence[str] | None = None,
        check_chunks: bool = True,
        allow_duplicates: bool = False,
    ) -> None:
        self.location = str(location)
        self._store = zarrio.open_store(location, "r", storage_options)
        root = arrayio.read_json_many(self._store, ["zarr.json"])[0]
        if root is None:
            raise StoreError(f"{self.location}: no zarr.json: not a zarr v3 target store")
        self.meta, self.record = spec.parse_root(root.get("attributes") or {}, self.location)
        if labels is not None:
            self.check_labels(labels)
        found = scan(self._store, self.location, self.meta, version=self.record["version"])
        self._check_log(found)
        self.parts: list[PartInfo] = found.parts
        self.uncommitted: list[str] = found.uncommitted
        self.sealed = found.sealed
        self.codebook = coding.log_codebook() if self.meta.values == "uint8" else None
        self.transform = spec.stored_transform(self.record)  # how values arrays are stored
        self._check_chunks = check_chunks and zarrio.can_list(location)
        self._data: dict[int, PartData] = {}
        self._load_index(allow_duplicates)

    def _check_log(self, found: PartScan) -> None:
        """Refuse a store that lost a committed part (the commit log names it): reading on
        would silently hand out fewer utterances. One listing; nothing without a log."""
        if not zarrio.can_list(self.location):
            return
        logged = [n for n in arrayio.list_dir(self._store, spec.COMMITS) if n != "zarr.json"]
        lost = sorted(set(logged) - {p.id for p in found.parts})
        if lost:
            raise StoreIntegrityError(
                f"{self.location}: {len(lost)} committed part(s) missing or without their "
                f"commit record ({', '.join(lost[:3])}; see `kdpipe store verify`): copy the "
                "store to a new one (`kdpipe store copy`) and rerun teach there to redo them"
            )

    @classmethod
    def open(cls, location: str | Path, **kwargs: Any) -> StoreReader:
        """Same as ``StoreReader(location, ...)``."""
        return cls(location, **kwargs)

    # -- index ------------------------------------------------------------------------
    def _load_index(self, allow_duplicates: bool) -> None:
        names = [
            "ids/utf8",
            "ids/offsets",
            "frame_offsets",
            "subsampling",
            "frame_shift_ms",
            "input_window",
        ]
        where = [
            f"{self.location}: part {part.id}: array index/{name}"
            for part in self.parts
            for name in names
        ]
        paths = [f"parts/{part.id}/index/{name}" for part in self.parts for name in names]
        data = arrayio.read_slices(
            arrayio.open_arrays(self._store, paths), [Ellipsis] * len(paths), where
        )
        quality = self._read_quality()
        self.ids: list[str] = []  # store order, first occurrence of each id
        self._where: dict[str, tuple[int, int]] = {}  # id -> (part, position in part)
        self._part_ids: list[list[str]] = []
        self._frame_offsets: list[np.ndarray] = []  # per part (U_p + 1,)
        self._index_cols: list[dict[str, np.ndarray]] = []  # per part, per-utterance columns
        self.shadowed: dict[str, list[tuple[int, int]]] = {}  # later copies of a duplicate id
        keep: list[np.ndarray] = []  # per part (U_p,) bool: first occurrences
        for p, part in enumerate(self.parts):
            got = dict(zip(names, data[p * len(names) : (p + 1) * len(names)], strict=True))
            ids = self._check_index(part, got)
            self._part_ids.append(ids)
            self._frame_offsets.append(got["frame_offsets"])
            self._index_cols.append({name: got[name] for name in names[3:]})
            keep.append(np.ones(len(ids), dtype=bool))
            count = len(ids)
            if self._where.keys().isdisjoint(ids) and len(set(ids)) == count:  # no duplicates
                positions = zip(repeat(p, count), range(count), strict=True)
                self._where.update(zip(ids, positions, strict=True))
                self.ids.extend(ids)
                continue
            for position, utt_id in enumerate(ids):
                if utt_id not in self._where:
                    self._where[utt_id] = (p, position)
                    self.ids.append(utt_id)
                    continue
                if not allow_duplicates:
                    other = self.parts[self._where[utt_id][0]].id
                    raise StoreIntegrityError(
                        f"{self.location}: utterance {utt_id} is in parts {other} and {part.id}"
                    )
                self.shadowed.setdefault(utt_id, []).append((p, position))
                keep[p][position] = False

        def column(values: list[np.ndarray], empty: np.ndarray) -> np.ndarray:
            return np.concatenate(values)[np.concatenate(keep)] if values else empty

        frames = [np.diff(offsets) for offsets in self._frame_offsets]
        cols = self._index_cols
        self.num_frames = column(frames, np.zeros(0, np.int64))
        self.subsampling = column([c["subsampling"] for c in cols], np.zeros(0, np.uint16))
        self.frame_shift_ms = column([c["frame_shift_ms"] for c in cols], np.zeros(0, np.float32))
        self.input_window = column([c["input_window"] for c in cols], np.zeros((0, 2), np.int64))
        # per utterance (N,) float32 of each spec.QUALITY column; NaN: unknown (format < 3)
        self.quality: dict[str, np.ndarray] = {
            name: column(per_part, np.zeros(0, np.float32)) for name, per_part in quality.items()
        }

    def _read_quality(self) -> dict[str, list[np.ndarray]]:
        """Per quality column, each part's (U_p,) float32 (NaN for stores before format 3)."""
        if self.record["version"] < 3:
            return {
                name: [np.full(part.num_utterances, np.nan, np.float32) for part in self.parts]
                for name in spec.QUALITY
            }
        paths = [
            f"parts/{part.id}/index/quality/{name}" for name in spec.QUALITY for part in self.parts
        ]
        where = [f"{self.location}: array {path}" for path in paths]
        data = arrayio.read_slices(
            arrayio.open_arrays(self._store, paths), [Ellipsis] * len(paths), where
        )
        n = len(self.parts)
        for part, got in zip(self.parts * len(spec.QUALITY), data, strict=True):
            if got.shape != (part.num_utterances,):
                raise StoreIntegrityError(
                    f"{self.location}: part {part.id}: a quality array has shape {got.shape}"
                )
        return {name: list(data[j * n : (j + 1) * n]) for j, name in enumerate(spec.QUALITY)}

    def _check_index(self, part: PartInfo, got: dict[str, np.ndarray]) -> list[str]:
        at = f"{self.location}: part {part.id}"
        u = part.num_utterances
        for name, arr in got.items():
            want = part.arrays[f"index/{name}"]["shape"]
            if list(arr.shape) != want:
                raise StoreIntegrityError(
                    f"{at}: array index/{name} has shape {arr.shape}, its commit record says {want}"
                )
        raw, off, f_off = got["ids/utf8"], got["ids/offsets"], got["frame_offsets"]
        for name, o, end in (
            ("ids/offsets", off, len(raw)),
            ("frame_offsets", f_off, part.num_frames),
        ):
            if len(o) != u + 1 or o[0] != 0 or o[-1] != end or (np.diff(o) < 0).any():
                raise StoreIntegrityError(f"{at}: array index/{name} is not a valid offsets array")
        blob, cuts = raw.tobytes(), off.tolist()  # python ints: 10x faster to slice with
        try:  # (maps: no Python-level loop over the utterances)
            return list(map(bytes.decode, map(blob.__getitem__, map(slice, cuts, cuts[1:]))))
        except UnicodeDecodeError:
            raise StoreIntegrityError(f"{at}: array index/ids is not UTF-8") from None

    # -- metadata ---------------------------------------------------------------------
    @property
    def label_set(self) -> LabelSet:
        return self.meta.label_set

    def check_labels(self, labels: LabelSet | Sequence[str], what: str = "the student") -> None:
        """``LabelSetError`` unless the store's label set equals ``labels``."""
        other = labels if isinstance(labels, LabelSet) else LabelSet(tuple(labels))
        self.meta.label_set.check_same(other, f"store {self.location}", what)

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._where

    @property
    def total_frames(self) -> int:
        return int(self.num_frames.sum())

    # -- data -------------------------------------------------------------------------
    def _part(self, i: int) -> PartData:
        """Part ``i``'s arrays, opened once (the 4 most recently used parts are kept)."""
        data = self._data.pop(i, None) or PartData(
            self, i, self._frame_offsets[i], self._part_ids[i]
        )
        self._data[i] = data  # most recent last
        while len(self._data) > 4:
            self._data.pop(next(iter(self._data)))
        return data

    def get(self, utt_id: str, *, members: bool = False) -> TargetBlock:
        """The targets of one utterance (a block of one)."""
        return self.read([utt_id], members=members)

    def read(self, ids: Sequence[str], *, members: bool = False) -> TargetBlock:
        """The targets of ``ids`` in that order; each part involved is read once."""
        if not ids:
            raise StoreError("read: no utterance ids given")
        locs = []
        for u in ids:
            if u not in self._where:
                raise StoreError(f"{self.location}: utterance {u} is not in the store")
            locs.append(self._where[u])
        by_part: dict[int, list[int]] = {}
        for p, j in locs:
            by_part.setdefault(p, []).append(j)
        got: dict[tuple[int, int], tuple[TargetBlock, int]] = {}
        for p, js in by_part.items():
            lo, hi = min(js), max(js) + 1
            block = self._part(p).read_range(lo, hi, members=members, sequential=False)
            for j in js:
                got[(p, j)] = (block, j - lo)
        if len(by_part) == 1:
            block = next(iter(got.values()))[0]
            return block.take([got[loc][1] for loc in locs])
        return TargetBlock.concat([got[loc][0].utterance(got[loc][1]) for loc in locs])

    def blocks(
        self,
        frames: int = BLOCK_FRAMES,
        *,
        parts: Sequence[str] | None = None,
        members: bool = False,
    ) -> Iterator[TargetBlock]:
        """Stream the store in order (parts by id, utterances as written) in blocks of whole
        utterances of about ``frames`` frames (never crossing a part); ``parts`` restricts
        to some part ids (e.g. one shard per data-loader worker). The next block is read in
        a background thread while the caller works on this one (so two blocks are held in
        memory at once: ~50 MB at the default size and k = 8)."""
        wanted = None if parts is None else set(parts)
        ranges = [
            (i, u, e)
            for i, part in enumerate(self.parts)
            if wanted is None or part.id in wanted
            for u, e in self._block_ranges(i, frames)
        ]
        opened: dict[int, PartData] = {}  # this stream's own, so that read() may run beside

        def load(i: int, u: int, e: int) -> TargetBlock:
            if i not in opened:
                opened.clear()  # parts are read in turn: drop the previous part's window
                opened[i] = PartData(self, i, self._frame_offsets[i], self._part_ids[i])
            block = opened[i].read_range(u, e, members=members, sequential=True)
            if self.shadowed:
                keep = [k for k, x in enumerate(block.ids) if self._where[x] == (i, u + k)]
                block = block.take(keep) if len(keep) < len(block) else block
            return block

        with ThreadPoolExecutor(1, thread_name_prefix="kdpipe-read-ahead") as ahead:
            try:
                nxt = ahead.submit(load, *ranges[0]) if ranges else None
                for r in range(len(ranges)):
                    assert nxt is not None
                    block = nxt.result()
                    nxt = ahead.submit(load, *ranges[r + 1]) if r + 1 < len(ranges) else None
                    if len(block):
                        yield block
            finally:
                if nxt is not None:
                    nxt.cancel()

    def _block_ranges(self, i: int, frames: int) -> Iterator[tuple[int, int]]:
        """Utterance ranges [u, e) of part ``i`` of about ``frames`` frames each."""
        f_off = self._frame_offsets[i]
        u, n = 0, self.parts[i].num_utterances
        while u < n:
            e = int(np.searchsorted(f_off, f_off[u] + max(1, frames), side="left"))
            e = min(max(e, u + 1), n)
            yield u, e
            u = e
