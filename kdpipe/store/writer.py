"""``StoreWriter``: append utterances to a target store, one atomically committed part at a time.

Many writers (processes, machines) can write one store at once without talking to each
other: each buffers utterances in memory and, every ``part_frames`` frames and at
``close()``, writes them as a new part ``parts/<id>`` whose commit record is written last.
A killed writer loses only its buffer; a restarted one skips the utterances already
committed (``add`` returns False for them).

Each utterance is checked and encoded as it is added (``encode_utterance``), and a part's
arrays are assembled at commit (``assemble_part``), in the current format
(``spec.VERSION``): uint8 values of sparse rows are row-delta coded on the way out
(``coding``).

Shapes: T frames of the utterance, k kept classes per row (fixed), nnz entries (variable),
C classes, U utterances and R = sum(T) frames of a part.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import socket
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import __version__, outputs, zarrio
from kdpipe.errors import (
    FingerprintMismatch,
    LabelSetError,
    StoreError,
    StoreFormatError,
    StoreIntegrityError,
)
from kdpipe.sparse import SparseRows
from kdpipe.store import arrayio, coding, spec
from kdpipe.store.coding import ROW_DELTA, delta_encode, values_transform
from kdpipe.store.parts import log_commit, scan

PART_FRAMES = 1 << 20  # frames per part: ~20 MB on disk; a crash loses at most this


def _values(x: np.ndarray, meta: spec.StoreMeta, where: str, *, tail: bool) -> np.ndarray:
    """Encode float log-probs (or uint8 codes of the store's codebook) as the store does."""
    if x.dtype == np.uint8:
        if meta.values == "uint8":
            return x
        x = coding.log_codebook()[x]
    if not np.issubdtype(x.dtype, np.floating):
        raise StoreError(f"{where}: log-probs must be floats, got {x.dtype}")
    if np.isnan(x).any():
        raise StoreError(f"{where}: NaN log-probabilities")
    if (x > 1e-3).any():
        raise StoreError(f"{where}: log-probabilities > 0 (max {float(x.max()):.4g})")
    return coding.encode_logp(x, meta.values, tail=tail)


def encode_rows(
    rows: SparseRows, meta: spec.StoreMeta, where: str, num_rows: int | None
) -> SparseRows:
    """Validate ``rows`` against the store's layout and label set and encode its values."""
    c = meta.num_classes
    if rows.num_classes != c:
        raise LabelSetError(
            f"{where}: targets over {rows.num_classes} classes; the store's label set has {c}"
        )
    layout, width = meta.rule.layout, meta.rule.width(c)
    if rows.layout != layout or (width is not None and rows.width != width):
        raise StoreError(
            f"{where}: {rows.layout} rows of width {rows.width}; the store's rule "
            f"{meta.rule} needs {layout} rows" + (f" of width {width}" if width else "")
        )
    if num_rows is not None and rows.num_rows != num_rows:
        raise StoreError(f"{where}: {rows.num_rows} rows, expected {num_rows}")
    if rows.tail.shape != (rows.num_rows,):
        raise StoreError(f"{where}: tail has shape {rows.tail.shape}, expected ({rows.num_rows},)")
    if rows.values.dtype == np.uint8 and (
        rows.codebook is None or not np.array_equal(rows.codebook, coding.log_codebook())
    ):
        raise StoreError(f"{where}: uint8 values with a foreign codebook")
    indices, offsets = None, None
    if rows.indices is not None:
        ix = rows.indices
        if ix.shape != rows.values.shape or not np.issubdtype(ix.dtype, np.integer):
            raise StoreError(f"{where}: class indices must be integers shaped like the values")
        if ix.size and (int(ix.min()) < 0 or int(ix.max()) >= c):
            bad = int(ix.max()) if int(ix.max()) >= c else int(ix.min())
            raise StoreError(f"{where}: class index {bad} out of range [0, {c})")
        indices = ix.astype(spec.index_dtype(c), copy=False)
    elif rows.values.shape[1:] != (c,):
        raise StoreError(f"{where}: dense rows must have {c} columns")
    if rows.offsets is not None:
        off = np.asarray(rows.offsets, dtype=np.int64)
        if off[0] != 0 or off[-1] != len(rows.values) or (np.diff(off) < 0).any():
            raise StoreError(f"{where}: row offsets are not a valid CSR offsets array")
        offsets = off
    values = _values(rows.values, meta, f"{where} values", tail=False)
    if indices is not None:
        _check_descending(values, offsets, where)
    return SparseRows(
        values=values,
        tail=_values(rows.tail, meta, f"{where} tail", tail=True),
        num_classes=c,
        indices=indices,
        offsets=offsets,
    )


def _check_descending(values: np.ndarray, offsets: np.ndarray | None, where: str) -> None:
    """Sparse rows keep their entries in descending probability order (the format says so,
    and the row-delta coding of uint8 values relies on it)."""
    if offsets is None:
        up = values[:, 1:] > values[:, :-1]  # (T, k-1)
        bad = np.flatnonzero(up.any(axis=1))
    else:
        up = values[1:] > values[:-1]  # (nnz-1,)
        same_row = np.ones(len(up), dtype=bool)
        same_row[offsets[1:-1][(offsets[1:-1] > 0) & (offsets[1:-1] < len(values))] - 1] = False
        pos = np.flatnonzero(up & same_row)
        bad = np.searchsorted(offsets, pos, side="right") - 1
    if len(bad):
        raise StoreError(
            f"{where}: row {int(bad[0])}: entries not in descending probability order "
            "(a selection rule returns them sorted)"
        )


def _hard(x: Any, n: int, meta: spec.StoreMeta, where: str) -> np.ndarray:
    dt, c = spec.hard_dtype(meta.num_classes), meta.num_classes
    a = np.asarray(x).reshape(-1) if x is not None else np.full(n, -1)
    if a.shape != (n,) or not (np.issubdtype(a.dtype, np.integer) or a.size == 0):
        raise StoreError(f"{where}: hard labels must be {n} integers, got {a.shape} {a.dtype}")
    a = a.astype(np.int64)
    if a.size and (a.min() < -1 or a.max() >= c):
        raise StoreError(f"{where}: hard label out of range [0, {c}) (-1 = no label)")
    return np.where(a < 0, np.iinfo(dt).max, a).astype(dt)


def encode_utterance(meta: spec.StoreMeta, utt_id: str, **kw: Any) -> dict[str, Any]:
    """One utterance, checked and encoded; the keywords are ``StoreWriter.add``'s."""
    rec: dict[str, Any] = {"id": utt_id, "levels": {}, "hard": {}, "members": {}}
    for level in spec.LEVELS:
        rows = kw[level]
        if (rows is not None) != (level in meta.levels):
            need = "needs" if level in meta.levels else "has no"
            raise StoreError(f"utterance {utt_id}: the store {need} {level}-level targets")
        if rows is None:
            continue
        n = None if level == "frame" else 1
        enc = encode_rows(rows, meta, f"utterance {utt_id} {level}", n)
        rec["levels"][level] = enc
        mem = kw[f"members_{level}"]
        if len(mem) != len(meta.members):
            raise StoreError(
                f"utterance {utt_id}: {len(mem)} member {level} targets for "
                f"{len(meta.members)} members"
            )
        rec["members"][level] = [
            encode_rows(m, meta, f"utterance {utt_id} member {name} {level}", enc.num_rows)
            for m, name in zip(mem, meta.members, strict=True)
        ]
        if level in meta.hard_labels:
            rec["hard"][level] = _hard(
                kw[f"hard_{level}"], enc.num_rows, meta, f"utterance {utt_id} hard {level}"
            )
        elif kw[f"hard_{level}"] is not None:
            raise StoreError(f"utterance {utt_id}: the store has no {level} hard labels")
    rec["num_frames"] = rec["levels"]["frame"].num_rows if "frame" in meta.levels else 0
    start, stop = (int(v) for v in kw["input_window"])
    if start < 0 or (stop != -1 and stop < start):
        raise StoreError(f"utterance {utt_id}: bad input window {kw['input_window']}")
    if not 1 <= int(kw["subsampling"]) <= 65535 or not kw["frame_shift_ms"] > 0:
        raise StoreError(f"utterance {utt_id}: bad subsampling or frame shift")
    rec["index"] = (int(kw["subsampling"]), float(kw["frame_shift_ms"]), (start, stop))
    rec["quality"] = _quality(kw.get("quality"), utt_id)
    return rec


def _quality(given: dict[str, float] | None, utt_id: str) -> tuple[float, ...]:
    """The utterance's quality columns (``spec.QUALITY``), NaN where unknown."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(spec.QUALITY))
    if unknown:
        raise StoreError(f"utterance {utt_id}: unknown quality columns {unknown}")
    values = tuple(float(given.get(name, np.nan)) for name in spec.QUALITY)
    if any(np.isinf(v) or v < 0 for v in values if not np.isnan(v)):
        raise StoreError(f"utterance {utt_id}: quality must be finite and >= 0: {given}")
    return values


def _rows_arrays(base: str, rows: SparseRows, out: dict[str, np.ndarray]) -> None:
    if rows.offsets is not None:
        out[base + "row_offsets"] = rows.offsets
    if rows.indices is not None:
        out[base + "indices"] = rows.indices
    transform = values_transform(rows.layout, rows.values.dtype.name)
    out[base + "values"] = (
        delta_encode(rows.values, rows.offsets) if transform == ROW_DELTA else rows.values
    )
    out[base + "tail"] = rows.tail


def assemble_part(meta: spec.StoreMeta, recs: list[dict[str, Any]]) -> tuple[dict, int]:
    """The arrays of a part (path -> array, as ``spec.expected_arrays``) and its frames."""
    ids = [r["id"] for r in recs]
    raw = [i.encode("utf-8") for i in ids]
    id_off = np.zeros(len(raw) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in raw], out=id_off[1:])
    frames = np.array([r["num_frames"] for r in recs], dtype=np.int64)
    f_off = np.zeros(len(recs) + 1, dtype=np.int64)
    np.cumsum(frames, out=f_off[1:])
    out: dict[str, np.ndarray] = {
        "index/ids/utf8": np.frombuffer(b"".join(raw), dtype=np.uint8),
        "index/ids/offsets": id_off,
        "index/frame_offsets": f_off,
        "index/subsampling": np.array([r["index"][0] for r in recs], dtype=np.uint16),
        "index/frame_shift_ms": np.array([r["index"][1] for r in recs], dtype=np.float32),
        "index/input_window": np.array([r["index"][2] for r in recs], dtype=np.int64).reshape(
            -1, 2
        ),
    }
    for j, name in enumerate(spec.QUALITY):
        out[f"index/quality/{name}"] = np.array([r["quality"][j] for r in recs], np.float32)
    for level in meta.levels:
        _rows_arrays(f"{level}/", SparseRows.concat([r["levels"][level] for r in recs]), out)
        if level in meta.hard_labels:
            out[f"{level}/hard"] = np.concatenate([r["hard"][level] for r in recs])
        for j in range(len(meta.members)):
            rows = SparseRows.concat([r["members"][level][j] for r in recs])
            _rows_arrays(f"members/{j}/{level}/", rows, out)
    return out, int(f_off[-1])


class StoreWriter:
    """Write utterances into the store at ``location`` (created if missing).

    An existing store must have the same metadata fingerprint (``FingerprintMismatch``
    otherwise) unless ``overwrite`` deletes it first. Use as a context manager or call
    ``close()``; leaving the ``with`` block by an exception abandons the buffer.
    """

    def __init__(
        self,
        location: str | Path,
        meta: spec.StoreMeta,
        *,
        storage_options: dict[str, Any] | None = None,
        overwrite: bool = False,
        part_frames: int = PART_FRAMES,
        chunk_rows: int = spec.CHUNK_ROWS,
        shard: str | None = None,
    ) -> None:
        import zarr

        self.location, self.meta = str(location), meta
        self.part_frames, self.chunk_rows = max(1, part_frames), max(1, chunk_rows)
        self.shard = shard or uuid.uuid4().hex[:8]
        if not spec.PART_ID.match(self.shard):
            raise StoreError(f"writer shard {self.shard!r}: use letters, digits, '.', '_', '-'")
        self._options = storage_options
        outputs.claim_output(
            location, makes=outputs.TARGET_STORE, overwrite=overwrite,
            storage_options=storage_options,
        )  # fmt: skip
        self._store = zarrio.open_store(location, "a", storage_options)
        root, parts = arrayio.read_json_many(self._store, ["zarr.json", "parts/zarr.json"])
        if overwrite and root is not None:
            zarr.open_group(self._store, mode="w", zarr_format=3)  # deletes the store
            root = parts = None
        if root is not None:
            self._check_root()
        if root is None:  # creating never deletes: a racing writer may have begun
            arrayio.create_root(self._store, spec.root_record(meta), parts_exist=parts is not None)
        elif parts is None:
            arrayio.create_root(self._store, root["attributes"][spec.ROOT_ATTR])
        self._lock: Path | None = self._acquire()
        try:
            self._known: set[str] = set()  # committed parts whose ids are in _others
            self._others: set[str] = set()  # utterance ids committed (by anyone)
            self._refresh()
        except BaseException:
            self.release()
            raise
        self.committed: frozenset[str] = frozenset(self._others)
        self.dropped_at_commit = 0  # utterances another writer committed first
        self._seen: set[str] = set()
        self._buf: list[dict[str, Any]] = []
        self._buf_frames = 0
        self._seq = 0
        self.parts_written: list[str] = []

    # -- reading what is there --------------------------------------------------------
    def _check_root(self) -> None:
        doc = arrayio.read_json_many(self._store, ["zarr.json"])[0] or {}
        meta, rec = spec.parse_root(doc.get("attributes") or {}, self.location)
        if rec["version"] != spec.VERSION:
            raise StoreFormatError(
                f"{self.location}: written in format version {rec['version']}; this kdpipe "
                f"writes version {spec.VERSION} only: write a new store (or overwrite it)"
            )
        if rec["fingerprint"] != self.meta.fingerprint:
            diff = sorted(k for k, v in self.meta.to_dict().items() if meta.to_dict().get(k) != v)
            raise FingerprintMismatch(
                f"{self.location}: the store holds targets made with other settings "
                f"(differs in: {', '.join(diff)}); use a new store or overwrite it"
            )

    def _refresh(self) -> None:
        """Learn the utterances of parts committed since the last look (by any writer),
        reading only the new parts' ids; a store holding an utterance twice is refused, so
        that a rerun never skips what it cannot trust."""
        found = scan(self._store, self.location, self.meta, version=spec.VERSION)
        new = [p for p in found.parts if p.id not in self._known]
        names = ("utf8", "offsets")
        paths = [f"parts/{p.id}/index/ids/{n}" for p in new for n in names]
        data = arrayio.read_slices(
            arrayio.open_arrays(self._store, paths),
            [Ellipsis] * len(paths),
            [f"{self.location}: {p}" for p in paths],
        )
        for k, part in enumerate(new):
            raw, off = data[2 * k].tobytes(), data[2 * k + 1]
            with arrayio.reading(f"{self.location}: part {part.id}: index/ids"):
                ids = [raw[off[i] : off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]
            twice = self._others.intersection(ids) or {u for u, n in Counter(ids).items() if n > 1}
            if twice:
                raise StoreIntegrityError(
                    f"{self.location}: holds utterance {sorted(twice)[0]} twice (part "
                    f"{part.id} and another); `kdpipe store copy` it into a new store to keep "
                    "one copy of each, then write there"
                )
            self._others.update(ids)
            self._known.add(part.id)

    def _acquire(self) -> Path | None:
        """The lock of this writer's shard (local stores only; object stores rely on the
        check at commit): ``locks/<shard>/zarr.json``, created exclusively with the
        holder's host and pid; a lock left by a dead process of this host is taken over."""
        if zarrio.is_url(self.location):
            return None
        root = Path(self.location.removeprefix("file://")) / spec.LOCKS
        path = root / self.shard / "zarr.json"
        group = {"zarr_format": 3, "node_type": "group", "attributes": {}}
        if not (root / "zarr.json").exists():
            arrayio.put_many(self._store, {f"{spec.LOCKS}/zarr.json": json.dumps(group).encode()})
        path.parent.mkdir(parents=True, exist_ok=True)
        me = {"host": socket.gethostname(), "pid": os.getpid(), "since": _now()}
        group["attributes"] = {spec.LOCK_ATTR: me}
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = _holder(path)
                if holder is None or not _gone(holder, me):
                    who = "another writer" if holder is None else (
                        f"pid {holder.get('pid')} on {holder.get('host')} since "
                        f"{holder.get('since')}"
                    )  # fmt: skip
                    raise StoreError(
                        f"{self.location}: shard {self.shard} is being written by {who}; "
                        f"wait for it to finish (if that writer is gone, delete {path})"
                    ) from None
                path.unlink(missing_ok=True)  # a dead writer's lock: take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(group, f)
            return path
        raise StoreError(f"{self.location}: cannot take the lock {path}")

    def release(self) -> None:
        """Give up this writer's lock (``close`` does; call it when abandoning a writer)."""
        lock, self._lock = self._lock, None
        if lock is not None and (_holder(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)
            with contextlib.suppress(OSError):  # another writer may be taking it
                lock.parent.rmdir()

    # -- adding -----------------------------------------------------------------------
    def add(
        self,
        utt_id: str,
        *,
        frame: SparseRows | None = None,
        utt: SparseRows | None = None,
        hard_frame: np.ndarray | None = None,
        hard_utt: int | None = None,
        members_frame: tuple[SparseRows, ...] | list[SparseRows] = (),
        members_utt: tuple[SparseRows, ...] | list[SparseRows] = (),
        subsampling: int | None = None,
        frame_shift_ms: float | None = None,
        input_window: tuple[int, int] | None = None,
        quality: dict[str, float] | None = None,
    ) -> bool:
        """Buffer one utterance; False (and nothing done) if it is already committed.

        ``frame``: its frame-level targets (T rows); ``utt``: its clip-level target (1 row);
        hard labels use -1 for 'no label'; ``input_window`` = (start, stop) input frames
        when the teacher saw a crop (stop -1 = to the end); ``quality``: the teacher's
        quality on it (``spec.QUALITY`` names; NaN where not given). Defaults come from
        the metadata.
        """

        if not isinstance(utt_id, str) or not utt_id or any(c.isspace() for c in utt_id):
            raise StoreError(f"utterance id {utt_id!r} is empty or contains whitespace")
        if utt_id in self.committed:
            return False
        if utt_id in self._seen:
            raise StoreError(f"{self.location}: utterance {utt_id} added twice")
        rec = encode_utterance(
            self.meta,
            utt_id,
            frame=frame,
            utt=utt,
            hard_frame=hard_frame,
            hard_utt=hard_utt,
            members_frame=tuple(members_frame),
            members_utt=tuple(members_utt),
            subsampling=self.meta.subsampling if subsampling is None else subsampling,
            frame_shift_ms=self.meta.frame_shift_ms if frame_shift_ms is None else frame_shift_ms,
            input_window=(0, -1) if input_window is None else input_window,
            quality=quality,
        )
        self._seen.add(utt_id)
        self._buf.append(rec)
        self._buf_frames += max(1, rec["num_frames"])
        if self._buf_frames >= self.part_frames:
            self.flush()
        return True

    # -- writing parts ----------------------------------------------------------------
    def flush(self) -> str | None:
        """Write and commit the buffered utterances as one part; returns its id."""

        if self._buf:
            self._drop_committed()
        if not self._buf:
            return None
        arrays, num_frames = assemble_part(self.meta, self._buf)
        pid = f"{self.shard}-{self._seq:05d}-{uuid.uuid4().hex[:6]}"
        self._seq += 1
        todo = {}
        for path, data in arrays.items():
            flat = data.ndim == 1 and path.endswith(("indices", "values"))
            todo[path] = (data, self.chunk_rows * (8 if flat else 1))  # ~ k entries per row
        record = {
            "part": pid,
            "fingerprint": self.meta.fingerprint,
            "num_utterances": len(self._buf),
            "num_frames": num_frames,
            "committed_at": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "kdpipe_version": __version__,
            "writer": {"shard": self.shard, "host": socket.gethostname(), "pid": os.getpid()},
            "arrays": {
                path: {
                    "shape": list(data.shape),
                    "dtype": data.dtype.name,
                    "chunks": [max(1, min(len(data), chunk)), *data.shape[1:]],
                    "sha256": arrayio.sha256(data),
                }
                for path, (data, chunk) in todo.items()
            },
        }
        objects, group_json, _ = arrayio.build_part(todo, {spec.PART_ATTR: record})
        arrayio.put_many(self._store, {f"parts/{pid}/{k}": v for k, v in objects.items()})
        self._check_root()  # another writer may have re-created the store meanwhile
        self._commit(f"parts/{pid}/zarr.json", group_json)
        log_commit(self._store, record)
        self._known.add(pid)
        self._others.update(r["id"] for r in self._buf)
        self.parts_written.append(pid)
        self._buf, self._buf_frames = [], 0
        return pid

    @property
    def num_committed(self) -> int:
        """Utterances committed to the store, by any writer, as of this writer's last look
        (its opening and each of its commits)."""
        return len(self._others)

    def _drop_committed(self) -> None:
        """Drop buffered utterances that another writer committed since this one looked."""
        self._refresh()
        keep = [r for r in self._buf if r["id"] not in self._others]
        if len(keep) < len(self._buf):
            self.dropped_at_commit += len(self._buf) - len(keep)
            self._buf = keep
            self._buf_frames = sum(max(1, r["num_frames"]) for r in keep)

    def _commit(self, key: str, group_json: bytes) -> None:
        """The commit: one write of the part group's zarr.json, holding the commit record,
        after everything else (one atomic object write on local disks and object stores)."""
        arrayio.put_many(self._store, {key: group_json})

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self.release()

    def bytes_written(self) -> int:
        """Bytes on storage of the parts this writer committed (0 where the filesystem
        cannot tell, e.g. over HTTP)."""
        from fsspec.core import url_to_fs  # fsspec is imported by zarr anyway; kept local

        try:
            filesystem, root = url_to_fs(self.location, **(self._options or {}))
            return int(
                sum(filesystem.du(f"{root.rstrip('/')}/parts/{p}") for p in self.parts_written)
            )
        except (OSError, ValueError, NotImplementedError):
            return 0

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.release()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _holder(path: Path) -> dict[str, Any] | None:
    """Who holds the lock at ``path`` (None: unreadable, e.g. being written)."""
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    holder = (doc.get("attributes") or {}).get(spec.LOCK_ATTR) if isinstance(doc, dict) else None
    return holder if isinstance(holder, dict) else None


def _gone(holder: dict[str, Any], me: dict[str, Any]) -> bool:
    """The holder is this process (a writer it abandoned) or a dead process of this host."""
    pid = holder.get("pid")
    if holder.get("host") != me["host"] or not isinstance(pid, int):
        return False
    if pid == me["pid"]:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False
