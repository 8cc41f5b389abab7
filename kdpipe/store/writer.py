"""``StoreWriter``: append utterances to a target store, one atomically committed part at a time.

Many writers (processes, machines) can write one store at once without talking to each
other: each buffers utterances in memory and, every ``part_frames`` frames and at
``close()``, writes them as a new part ``parts/<id>`` whose commit record is written last.
A killed writer loses only its buffer; a restarted one skips the utterances already
committed (``add`` returns False for them).
"""

from __future__ import annotations

import datetime as _dt
import os
import socket
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import __version__
from kdpipe.errors import FingerprintMismatch, StoreError, StoreFormatError
from kdpipe.sparse import SparseRows
from kdpipe.store import arrayio, spec

PART_FRAMES = 1 << 20  # frames per part: ~20 MB on disk; a crash loses at most this


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
        self._store = arrayio.open_store(location, "a", storage_options)
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
        self.committed: frozenset[str] = frozenset(self._committed_ids())
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

    def _committed_ids(self) -> list[str]:
        from kdpipe.store.reader import StoreReader

        r = StoreReader(
            self.location, storage_options=self._options, allow_duplicates=True, check_chunks=False
        )
        return r.ids

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
    ) -> bool:
        """Buffer one utterance; False (and nothing done) if it is already committed.

        ``frame``: its frame-level targets (T rows); ``utt``: its clip-level target (1 row);
        hard labels use -1 for 'no label'; ``input_window`` = (start, stop) input frames
        when the teacher saw a crop (stop -1 = to the end). Defaults come from the metadata.
        """
        from kdpipe.store.encode import encode_utterance

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
        from kdpipe.store.encode import assemble_part

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
        self.parts_written.append(pid)
        self._buf, self._buf_frames = [], 0
        return pid

    def _commit(self, key: str, group_json: bytes) -> None:
        """The commit: one write of the part group's zarr.json, holding the commit record,
        after everything else (one atomic object write on local disks and object stores)."""
        arrayio.put_many(self._store, {key: group_json})

    def close(self) -> None:
        self.flush()

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
