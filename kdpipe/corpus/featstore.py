"""The feature store: raw log-mel features of a whole corpus in one Zarr v3 group.

Written once by ``prepare`` (``FeatureStoreWriter``), read by ``teach`` and ``learn``
(``FeatureStore``). Legend: N utterances, T_i frames of utterance i, F mel bins,
T_total = sum T_i. Layout (format ``kdpipe.features``, version 1)::

    attrs   format, version, task ("clip" | "frame"), labels (list of names),
            features (FbankConfig.to_dict(); its cmvn is the default applied on read),
            fingerprint, source, source_format, num_utterances, num_frames,
            splits {name: count}, split_names, cmvn_computed_on ("train" | "all"),
            created (UTC ISO time), kdpipe_version, skipped [[utt id, reason], ...]
    feats           float32 (T_total, F), utterances concatenated in store order,
                    chunks (16384, F), zstd level 3. RAW features: no CMVN applied.
    offsets         int64 (N + 1): utterance i is feats[offsets[i]:offsets[i + 1]]
    ids, speakers   string columns (kdpipe.zarrio.write_strings)
    split           uint8 (N): index into attrs split_names
    durations       float32 (N): seconds of audio
    clip_labels     int32 (N): label index (clip task only)
    frame_labels    int32 (T_total): label index per frame, same offsets (frame task only)
    cmvn/mean, cmvn/std   float32 (F): global stats over the train split (all utterances
                    when there is no train split), used when CMVN is "global"

``prepare`` writes utterances grouped by split (train, dev, test, others), so
``load_split`` reads a split in a few large slices. ``format`` is written last.

Fingerprint: sha256 (16 hex digits) of the feature config, task, label set and, per
utterance in order, its id, speaker, split, frame count, labels, the float64 sum of its
features and the bytes of its first, middle and last frames: cheap (one pass ``prepare``
makes anyway) yet changed by any edit to audio, features, labels or order. Opening with
another ``cmvn`` than the stored one gives another fingerprint (the model input differs).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdpipe.corpus.features import Cmvn, CmvnStats, FbankConfig, apply_cmvn
from kdpipe.corpus.subsets import parse_split, subset, unknown_split
from kdpipe.errors import CorpusError, StoreError, StoreFormatError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level, task_level
from kdpipe.schema import fingerprint as short_hash
from kdpipe.zarrio import is_url, open_group, read_strings, write_strings

if TYPE_CHECKING:
    import numpy as np

FORMAT = "kdpipe.features"
VERSION = 1
CHUNK_FRAMES = 16384  # 16384 x 40 x 4 B = 2.5 MiB per chunk before compression


class FeatureStoreWriter:
    """Append utterances (in store order) then ``close()``; see the module docstring."""

    def __init__(
        self,
        location: str | Path,
        *,
        task: str,
        labels: LabelSet,
        config: FbankConfig,
        source: str = "",
        source_format: str = "",
        overwrite: bool = False,
        chunk_frames: int = CHUNK_FRAMES,
    ) -> None:
        import zarr

        if task not in ("clip", "frame"):
            raise CorpusError(f"unknown task {task!r}; expected 'clip' or 'frame'")
        self.location, self.task, self.labels, self.config = str(location), task, labels, config
        self.source, self.source_format = source, source_format
        self.group = _create(location, overwrite)
        dim, zstd = config.num_mel_bins, zarr.codecs.ZstdCodec(level=3)
        self._feats = self.group.create_array(
            "feats", shape=(0, dim), chunks=(chunk_frames, dim), dtype="float32", compressors=zstd
        )
        self._labels_arr = None
        if task == "frame":
            self._labels_arr = self.group.create_array(
                "frame_labels", shape=(0,), chunks=(chunk_frames,), dtype="int32", compressors=zstd
            )
        self._chunk = chunk_frames
        self._buf: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._buffered = self._written = 0
        self.ids: list[str] = []  # per-utterance columns, in store order
        self.speakers: list[str] = []
        self.splits: list[str] = []
        self.lengths: list[int] = []
        self.durations: list[float] = []
        self.clip_labels: list[int] = []
        self._stats: dict[str, CmvnStats] = {}
        self._hash = hashlib.sha256(
            json.dumps([config.to_dict(), task, labels.to_list()], sort_keys=True).encode()
        )

    def add(
        self,
        utt_id: str,
        feats: np.ndarray,
        *,
        speaker: str = "unknown",
        split: str = "train",
        duration: float | None = None,
        clip_label: int | None = None,
        frame_labels: np.ndarray | None = None,
    ) -> None:
        """Append one utterance's raw (T, F) features and its label(s)."""
        import numpy as np

        feats = np.ascontiguousarray(feats, dtype=np.float32)  # (T, F)
        n = len(feats)
        if feats.ndim != 2 or feats.shape[1] != self.config.num_mel_bins or n == 0:
            raise StoreError(
                f"utterance {utt_id}: features of shape {feats.shape}, expected "
                f"(T > 0, {self.config.num_mel_bins})"
            )
        lab: np.ndarray | None = None
        if self.task == "frame":
            if frame_labels is None or np.shape(frame_labels) != (n,):
                raise StoreError(f"utterance {utt_id}: need {n} frame labels")
            lab = np.asarray(frame_labels, dtype=np.int32)  # (T,)
        elif clip_label is None:
            raise StoreError(f"utterance {utt_id}: clip task needs a clip label")
        self.ids.append(utt_id)
        self.speakers.append(speaker)
        self.splits.append(split)
        self.lengths.append(n)
        shift = self.config.frame_shift_ms / 1000
        self.durations.append(duration if duration is not None else n * shift)
        self.clip_labels.append(-1 if clip_label is None else int(clip_label))
        self._stats.setdefault(split, CmvnStats(feats.shape[1])).add(feats)
        h = self._hash
        h.update(json.dumps([utt_id, speaker, split, n, self.clip_labels[-1]]).encode())
        h.update(feats.sum(axis=0, dtype=np.float64).tobytes())
        h.update(feats[[0, n // 2, n - 1]].tobytes())
        if lab is not None:
            h.update(lab.tobytes())
        self._buf.append((feats, lab))
        self._buffered += n
        if self._buffered >= self._chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        import numpy as np

        if not self._buf:
            return
        feats = np.concatenate([f for f, _ in self._buf])  # (T_buf, F)
        labs = np.concatenate([lab for _, lab in self._buf]) if self.task == "frame" else None
        n = len(feats) if final else len(feats) // self._chunk * self._chunk
        start, end = self._written, self._written + n
        self._feats.resize((end, feats.shape[1]))
        self._feats[start:end] = feats[:n]
        if labs is not None and self._labels_arr is not None:
            self._labels_arr.resize((end,))
            self._labels_arr[start:end] = labs[:n]
        self._written = end
        rest = (feats[n:], None if labs is None else labs[n:])
        self._buf = [rest] if len(rest[0]) else []
        self._buffered = len(rest[0])

    def close(self, skipped: list[tuple[str, str]] | None = None) -> str:
        """Write the columns, CMVN stats and attrs (``format`` last); return the fingerprint."""
        import datetime

        import numpy as np

        from kdpipe import __version__

        if not self.ids:
            raise CorpusError(f"{self.location}: no utterances to write")
        self._flush(final=True)
        g = self.group
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(self.lengths)
        split_names = list(dict.fromkeys(self.splits))
        if len(split_names) > 255:
            raise StoreError(f"{self.location}: {len(split_names)} splits; at most 255 fit")
        codes = np.array([split_names.index(s) for s in self.splits], dtype=np.uint8)
        g.create_array("offsets", data=offsets, chunks=(len(offsets),))
        g.create_array("split", data=codes, chunks=(len(codes),))
        g.create_array("durations", data=np.array(self.durations, np.float32), chunks=(len(codes),))
        if self.task == "clip":
            g.create_array(
                "clip_labels", data=np.array(self.clip_labels, np.int32), chunks=(len(codes),)
            )
        write_strings(g, "ids", self.ids)
        write_strings(g, "speakers", self.speakers)
        on = "train" if "train" in self._stats else "all"
        stats = self._stats.get("train") or CmvnStats.merged(list(self._stats.values()))
        cm = g.require_group("cmvn")
        cm.create_array("mean", data=stats.mean, chunks=(len(stats.mean),))
        cm.create_array("std", data=stats.std, chunks=(len(stats.std),))
        fp = self._hash.hexdigest()[:16]
        attrs = {
            "version": VERSION,
            "task": self.task,
            "labels": self.labels.to_list(),
            "features": self.config.to_dict(),
            "fingerprint": fp,
            "source": self.source,
            "source_format": self.source_format,
            "num_utterances": len(self.ids),
            "num_frames": int(offsets[-1]),
            "splits": {s: self.splits.count(s) for s in split_names},
            "split_names": split_names,
            "cmvn_computed_on": on,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kdpipe_version": __version__,
            "skipped": [[u, r] for u, r in (skipped or [])],
        }
        g.attrs.update(attrs)
        g.attrs["format"] = FORMAT  # last: marks the store complete
        return fp


class FeatureStore:
    """Read a feature store; features come back with the configured CMVN applied."""

    def __init__(self, group: Any, location: str, cmvn: Cmvn | None = None) -> None:
        import numpy as np

        a = group.attrs.asdict()
        fmt, version = a.get("format"), a.get("version")
        if fmt != FORMAT:
            what = "an incomplete feature store" if "feats" in group else "not a feature store"
            raise StoreFormatError(f"{location}: {what} (format {fmt!r}, expected {FORMAT!r})")
        if not isinstance(version, int) or version < 1 or version > VERSION:
            raise StoreFormatError(
                f"{location}: feature store version {version!r}; this kdpipe "
                f"reads version {VERSION} (a newer kdpipe wrote it?)"
            )
        self.location, self.group, self.attrs = location, group, a
        self.task = a["task"]  # as recorded: "frame" or "clip" (see kdpipe.levels)
        self.level: Level = task_level(self.task)  # the labels' level
        self.labels = LabelSet(tuple(a["labels"]))
        stored = FbankConfig.from_dict(a["features"])
        self.config = stored if cmvn is None else replace(stored, cmvn=cmvn)
        self.fingerprint: str = a["fingerprint"]
        if self.config.cmvn != stored.cmvn:
            self.fingerprint = short_hash([self.fingerprint, "cmvn", self.config.cmvn])
        self.offsets = group["offsets"][:].astype(np.int64)  # (N + 1,)
        self.num_frames = np.diff(self.offsets)  # (N,)
        self.ids = read_strings(group, "ids")
        self.speakers = read_strings(group, "speakers")
        self._split_names = list(a["split_names"])
        self._split_codes = group["split"][:]  # (N,) uint8
        self.splits = [self._split_names[c] for c in self._split_codes]
        self.durations = group["durations"][:].astype(np.float32)  # (N,)
        self.clip_labels = (
            group["clip_labels"][:].astype(np.int64) if self.task == "clip" else None
        )  # (N,)
        self.cmvn_mean = group["cmvn/mean"][:]  # (F,)
        self.cmvn_std = group["cmvn/std"][:]  # (F,)
        self.skipped = [tuple(x) for x in a.get("skipped", [])]
        self._feats = group["feats"]
        self._frame_labels = group["frame_labels"] if self.task == "frame" else None
        self._index = {u: i for i, u in enumerate(self.ids)}
        self._cache: dict[str, tuple[int, int, Any]] = {}

    @classmethod
    def open(cls, location: str | Path, *, cmvn: Cmvn | None = None) -> FeatureStore:
        """Open the store at a local path or fsspec URL; ``cmvn`` overrides the stored mode."""
        if not is_url(location) and not Path(location).exists():
            raise CorpusError(f"feature store not found: {location}")
        try:
            group = open_group(location, mode="r")
        except (FileNotFoundError, ValueError) as e:
            raise CorpusError(
                f"feature store not found or not a Zarr group: {location} ({type(e).__name__})"
            ) from None
        return cls(group, str(location), cmvn)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.location!r}, task={self.task}, utterances={len(self)}, "
            f"frames={int(self.offsets[-1])}, fingerprint={self.fingerprint})"
        )

    @property
    def dim(self) -> int:
        """F, the feature dimension."""
        return self.config.num_mel_bins

    def index_of(self, utt_id: str) -> int:
        try:
            return self._index[utt_id]
        except KeyError:
            raise CorpusError(f"{self.location}: no utterance {utt_id!r}") from None

    def indices(self, split: str | None = None) -> np.ndarray:
        """Utterance indices (int64) of ``split`` (all when None; a name or a subset such as
        ``train[:10%]``, see ``kdpipe.corpus.subsets``), in store order."""
        import numpy as np

        if split is None:
            return np.arange(len(self), dtype=np.int64)
        name, lo, hi = parse_split(split)
        code = self._split_names.index(name) if name in self._split_names else -1
        idx = np.flatnonzero(self._split_codes == code).astype(np.int64)
        if len(idx) == 0:
            raise unknown_split(self.location, split, self.attrs["splits"])
        if len(part := subset(self.ids, idx, lo, hi)) == 0:
            msg = f"selects none of the {len(idx)} utterances of {name!r}: take a wider range"
            raise CorpusError(f"{self.location}: split {split!r} {msg}")
        return part

    def _rows(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of array ``name``, through a one-block cache of whole chunks so
        reading utterances in order decompresses each chunk once. Read-only view."""
        arr = self._feats if name == "feats" else self._frame_labels
        a, b, block = self._cache.get(name, (0, 0, None))
        if block is None or lo < a or hi > b:
            c = arr.chunks[0]
            a, b = lo // c * c, min(-(-hi // c) * c, arr.shape[0])
            block = arr[a:b]
            block.flags.writeable = False
            self._cache[name] = (a, b, block)
        return block[lo - a : hi - a]

    def raw_features(self, i: int) -> np.ndarray:
        """(T, F) float32 features of utterance ``i`` as stored (no CMVN; read-only)."""
        return self._rows("feats", *self._span(i))

    def _span(self, i: int) -> tuple[int, int]:
        return int(self.offsets[i]), int(self.offsets[i + 1])

    def normalize(self, feats: np.ndarray) -> np.ndarray:
        """Apply this store's CMVN to raw (T, F) features."""
        return apply_cmvn(feats, self.config.cmvn, self.cmvn_mean, self.cmvn_std)

    def features(self, i: int) -> np.ndarray:
        """(T, F) float32 features of utterance ``i``, CMVN applied per config."""
        x = self.normalize(self.raw_features(i))
        return x if x.flags.writeable else x.copy()

    def frame_labels(self, i: int) -> np.ndarray:
        """(T,) int64 frame labels of utterance ``i`` (frame task)."""
        if self._frame_labels is None:
            raise CorpusError(f"{self.location}: a clip-task store has no frame labels")
        return self._rows("frame_labels", *self._span(i)).astype("int64")

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray] | np.ndarray]:
        """Features (CMVN applied) and labels of ``split`` (a subset spec too), in store order.

        Returns N_split (T_i, F) arrays and either N_split (T_i,) int64 frame-label arrays
        (frame task) or (N_split,) int64 clip labels. Reads each contiguous run in one slice.
        """
        import numpy as np

        idx = self.indices(split)
        feats: list[np.ndarray] = []
        frame: list[np.ndarray] = []
        cuts = np.flatnonzero(np.diff(idx) != 1) + 1
        for run in np.split(idx, cuts):  # each run: consecutive utterance indices
            lo, hi = int(self.offsets[run[0]]), int(self.offsets[run[-1] + 1])
            bounds = self.offsets[run[1:]] - lo
            block = self._feats[lo:hi]  # (T_run, F)
            feats += [self.normalize(f) for f in np.split(block, bounds)]
            if self._frame_labels is not None:
                frame += np.split(self._frame_labels[lo:hi].astype(np.int64), bounds)
        clip = self.clip_labels
        return (feats, frame) if clip is None else (feats, clip[idx])

    def split_summary(self) -> dict[str, dict[str, float]]:
        """Per split: utterances, frames, speakers, hours of audio (for ``corpus info``)."""
        out: dict[str, dict[str, float]] = {}
        for name in self.attrs["split_names"]:
            idx = self.indices(name)
            out[name] = {
                "utterances": len(idx),
                "frames": int(self.num_frames[idx].sum()),
                "speakers": len({self.speakers[i] for i in idx}),
                "hours": float(self.durations[idx].sum()) / 3600,
            }
        return out


def _create(location: str | Path, overwrite: bool) -> Any:
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
