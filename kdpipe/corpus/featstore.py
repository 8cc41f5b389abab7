"""The feature store: raw log-mel features of a whole corpus in one Zarr v3 group.

Written once by ``prepare`` (``FeatureStoreWriter``), read by ``teach`` and ``learn``
(``FeatureStore``). Legend: N utterances, T_i frames of utterance i, F mel bins,
T_total = sum T_i. Layout (format ``kdpipe.features``, version 1)::

    attrs   format, version, task ("clip" | "frame" | "transcribed"), labels (list of
            names; [] for a transcribed store), features (FbankConfig.to_dict(); its
            cmvn is the default applied on read), fingerprint, source, source_format,
            num_utterances, num_frames, splits {name: count}, split_names,
            cmvn_computed_on ("train" | "all"), created (UTC ISO time), kdpipe_version,
            skipped [[utt id, reason], ...]; and only where the corpus brought its
            features (Kaldi feats.scp, lhotse): external_features {kind, dim, config,
            source, fingerprint} (``ExternalFeatures.record()`` plus the sha256, 16 hex
            digits, of that record and every utterance's (T, F) shape)
    feats           float32 (T_total, F), utterances concatenated in store order,
                    chunks (16384, F). RAW features: no CMVN applied.
    offsets         int64 (N + 1): utterance i is feats[offsets[i]:offsets[i + 1]]
    ids, speakers   string columns: NAME/utf8 (uint8) and NAME/offsets (int64, N + 1)
    split           uint8 (N): index into attrs split_names
    durations       float32 (N): seconds of audio
    clip_labels     int32 (N): label index (clip task only)
    frame_labels    int32 (T_total): label index per frame, same offsets (frame task only)
    texts           string column (N): transcripts, "" where an utterance has none; written
                    whenever the corpus has any (always for a transcribed store)
    cmvn/mean, cmvn/std   float32 (F): global stats over the train split (all utterances
                    when there is no train split), used when CMVN is "global"

Every array is in the checked layout of ``kdpipe.chunks`` (blosc zstd, then a CRC32C per
chunk: every read of a damaged chunk is a ``StoreIntegrityError`` naming the store and the
array), and ``attrs.arrays`` records, per array path, its shape, dtype, chunks and the
sha256 of its content, written with the other attrs before ``format``. Opening checks the
record against each array's metadata, the small arrays it reads whole (offsets, ids,
splits, ...) against their digests, and the offsets, ids and labels against each other;
the features and frame labels are CRC-checked chunk by chunk as they are read, and their
digests are checked by ``verify_feature_store`` (``kdpipe corpus verify``). A store written
before the record (zstd chunks without CRCs) still opens, read by zarr.

``prepare`` writes utterances grouped by split (train, dev, test, others), so
``load_split`` reads a split in a few large slices; ``read_utterances`` reads any sorted
selection run by run, one slice per run (what ``teach`` does). ``format`` is written last.

Fingerprint: sha256 (16 hex digits) of the feature config, task, label set and, per
utterance in order, its id, speaker, split, frame count, labels, the float64 sum of its
features and the bytes of its first, middle and last frames: cheap (one pass ``prepare``
makes anyway) yet changed by any edit to audio, features, labels or order. Opening with
another ``cmvn`` than the stored one gives another fingerprint (the model input differs).
A transcribed store's fingerprint covers every transcript too, and a store of external
features the ``external_features`` record; neither is hashed for the fbank stores of the
frame and clip tasks, whose fingerprints stay what they always were (their transcripts
are kept, not hashed).
"""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import __version__
from kdpipe.corpus.featarrays import (
    ARRAYS_ATTR,
    FRAME_ARRAYS,
    array_record,
    create_array,
    create_group,
    decode_strings,
    encode_strings,
    open_arrays,
    read_array,
    read_whole,
    structure_problems,
    write_array,
)
from kdpipe.corpus.features import Cmvn, CmvnStats, FbankConfig, apply_cmvn
from kdpipe.corpus.manifest import TASKS, TRANSCRIBED, transcripts_only
from kdpipe.corpus.subsets import parse_split, subset, unknown_split
from kdpipe.errors import CorpusError, StoreError, StoreFormatError, StoreIntegrityError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level, task_level
from kdpipe.schema import fingerprint as short_hash
from kdpipe.zarrio import is_url, open_group

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
        labels: LabelSet | None,
        config: FbankConfig,
        source: str = "",
        source_format: str = "",
        overwrite: bool = False,
        chunk_frames: int = CHUNK_FRAMES,
        external: dict[str, Any] | None = None,
    ) -> None:
        """``labels`` is None exactly for task ``transcribed``; ``external`` is the
        ``ExternalFeatures.record()`` of features that came with the corpus."""
        if task not in TASKS:
            raise CorpusError(f"unknown task {task!r}; expected 'clip', 'frame' or 'transcribed'")
        if (labels is None) != (task == TRANSCRIBED):
            raise CorpusError(
                f"a {task}-task store {'needs' if labels is None else 'takes no'} labels"
            )
        self.location, self.task, self.labels, self.config = str(location), task, labels, config
        self.source, self.source_format, self.external = source, source_format, external
        self.group = create_group(location, overwrite)
        dim = config.num_mel_bins
        self._record: dict[str, dict[str, Any]] = {}  # path -> what was written (ARRAYS_ATTR)
        self._digests = {"feats": hashlib.sha256()}  # of the frame arrays, as they grow
        self._feats = create_array(self.group, "feats", (chunk_frames, dim), "float32")
        self._labels_arr = None
        if task == "frame":
            self._labels_arr = create_array(self.group, "frame_labels", (chunk_frames,), "int32")
            self._digests["frame_labels"] = hashlib.sha256()
        self._chunk = chunk_frames
        self._buf: list[tuple[np.ndarray, np.ndarray | None]] = []
        self._buffered = self._written = 0
        self.ids: list[str] = []  # per-utterance columns, in store order
        self.speakers: list[str] = []
        self.splits: list[str] = []
        self.lengths: list[int] = []
        self.durations: list[float] = []
        self.clip_labels: list[int] = []
        self.texts: list[str] = []  # "" where an utterance has no transcript
        self._any_text = False
        self._stats: dict[str, CmvnStats] = {}
        head: list[Any] = [config.to_dict(), task, [] if labels is None else labels.to_list()]
        if external is not None:  # fbank stores hash exactly what they always did
            head.append(external)
        self._hash = hashlib.sha256(json.dumps(head, sort_keys=True).encode())

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
        text: str | None = None,
    ) -> None:
        """Append one utterance's raw (T, F) features, its label(s) and its transcript (a
        transcribed store needs a non-empty one; the other tasks keep it where given)."""
        feats = np.ascontiguousarray(feats, dtype=np.float32)  # (T, F)
        n = len(feats)
        if feats.ndim != 2 or feats.shape[1] != self.config.num_mel_bins or n == 0:
            raise StoreError(
                f"utterance {utt_id}: features of shape {feats.shape}, expected "
                f"(T > 0, {self.config.num_mel_bins})"
            )
        if not np.isfinite(feats).all():  # NaN/inf would also poison the CMVN stats
            raise CorpusError(f"utterance {utt_id}: features hold NaN or infinite values")
        labels: np.ndarray | None = None
        if self.task == "frame":
            if frame_labels is None or np.shape(frame_labels) != (n,):
                raise StoreError(f"utterance {utt_id}: need {n} frame labels")
            labels = np.asarray(frame_labels, dtype=np.int32)  # (T,)
        elif self.task == TRANSCRIBED:
            if not text:
                raise StoreError(f"utterance {utt_id}: a transcribed store needs a transcript")
        elif clip_label is None:
            raise StoreError(f"utterance {utt_id}: clip task needs a clip label")
        self.ids.append(utt_id)
        self.speakers.append(speaker)
        self.splits.append(split)
        self.lengths.append(n)
        shift = self.config.frame_shift_ms / 1000
        self.durations.append(duration if duration is not None else n * shift)
        self.clip_labels.append(-1 if clip_label is None else int(clip_label))
        self.texts.append(text or "")
        self._any_text = self._any_text or text is not None
        self._stats.setdefault(split, CmvnStats(feats.shape[1])).add(feats)
        digest = self._hash
        digest.update(json.dumps([utt_id, speaker, split, n, self.clip_labels[-1]]).encode())
        if self.task == TRANSCRIBED:
            digest.update(json.dumps(text).encode())
        digest.update(feats.sum(axis=0, dtype=np.float64).tobytes())
        digest.update(feats[[0, n // 2, n - 1]].tobytes())
        if labels is not None:
            digest.update(labels.tobytes())
        self._buf.append((feats, labels))
        self._buffered += n
        if self._buffered >= self._chunk:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self._buf:
            return
        feats = np.concatenate([utt_feats for utt_feats, _ in self._buf])  # (T_buf, F)
        labs = (
            np.concatenate([utt_labs for _, utt_labs in self._buf])
            if self.task == "frame"
            else None
        )
        n = len(feats) if final else len(feats) // self._chunk * self._chunk
        start, end = self._written, self._written + n
        self._feats.resize((end, feats.shape[1]))
        self._feats[start:end] = feats[:n]
        self._digests["feats"].update(feats[:n].tobytes())  # C order, little-endian float32
        if labs is not None and self._labels_arr is not None:
            self._labels_arr.resize((end,))
            self._labels_arr[start:end] = labs[:n]
            self._digests["frame_labels"].update(labs[:n].astype("<i4").tobytes())
        self._written = end
        rest = (feats[n:], None if labs is None else labs[n:])
        self._buf = [rest] if len(rest[0]) else []
        self._buffered = len(rest[0])

    def close(self, skipped: list[tuple[str, str]] | None = None) -> str:
        """Write the columns, CMVN stats and attrs (``format`` last); return the fingerprint."""
        if not self.ids:
            raise CorpusError(f"{self.location}: no utterances to write")
        self._flush(final=True)
        group = self.group
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(self.lengths)
        split_names = list(dict.fromkeys(self.splits))
        if len(split_names) > 255:
            raise StoreError(f"{self.location}: {len(split_names)} splits; at most 255 fit")
        codes = np.array([split_names.index(s) for s in self.splits], dtype=np.uint8)
        stats_on = "train" if "train" in self._stats else "all"
        stats = self._stats.get("train") or CmvnStats.merged(list(self._stats.values()))
        columns: dict[str, np.ndarray] = {
            "offsets": offsets,
            "split": codes,
            "durations": np.array(self.durations, np.float32),
            "cmvn/mean": stats.mean,
            "cmvn/std": stats.std,
        }
        if self.task == "clip":
            columns["clip_labels"] = np.array(self.clip_labels, np.int32)
        strings = {"ids": self.ids, "speakers": self.speakers}
        if self._any_text:
            strings["texts"] = self.texts
        for name, values in strings.items():
            columns[f"{name}/utf8"], columns[f"{name}/offsets"] = encode_strings(values)
        for path, data in columns.items():
            write_array(group, path, data, self._record)
        for path, arr in (("feats", self._feats), ("frame_labels", self._labels_arr)):
            if arr is not None:
                self._record[path] = array_record(
                    arr.shape, arr.dtype, arr.chunks, self._digests[path].hexdigest()
                )
        fingerprint = self._hash.hexdigest()[:16]
        attrs = {
            "version": VERSION,
            "task": self.task,
            "labels": [] if self.labels is None else self.labels.to_list(),
            "features": self.config.to_dict(),
            "fingerprint": fingerprint,
            "source": self.source,
            "source_format": self.source_format,
            "num_utterances": len(self.ids),
            "num_frames": int(offsets[-1]),
            "splits": {s: self.splits.count(s) for s in split_names},
            "split_names": split_names,
            "cmvn_computed_on": stats_on,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "kdpipe_version": __version__,
            "skipped": [[utt_id, reason] for utt_id, reason in (skipped or [])],
            ARRAYS_ATTR: self._record,
        }
        if self.external is not None:
            shapes = [[n, self.config.num_mel_bins] for n in self.lengths]
            record = {**self.external, "fingerprint": short_hash([self.external, shapes])}
            attrs["external_features"] = record
        group.attrs.update(attrs)
        group.attrs["format"] = FORMAT  # last: marks the store complete
        return fingerprint


class FeatureStore:
    """Read a feature store; features come back with the configured CMVN applied."""

    def __init__(self, group: Any, location: str, cmvn: Cmvn | None = None) -> None:
        attrs = group.attrs.asdict()
        fmt, version = attrs.get("format"), attrs.get("version")
        if fmt != FORMAT:
            what = "an incomplete feature store" if "feats" in group else "not a feature store"
            raise StoreFormatError(f"{location}: {what} (format {fmt!r}, expected {FORMAT!r})")
        if not isinstance(version, int) or version < 1 or version > VERSION:
            raise StoreFormatError(
                f"{location}: feature store version {version!r}; this kdpipe "
                f"reads version {VERSION} (a newer kdpipe wrote it?)"
            )
        self.location, self.group, self.attrs = location, group, attrs
        self.task = attrs["task"]  # as recorded: "frame", "clip" (see kdpipe.levels), "transcribed"
        self._labels = None if self.task == TRANSCRIBED else LabelSet(tuple(attrs["labels"]))
        # features that came with the corpus (Kaldi feats.scp, lhotse); None: fbank
        self.external: dict[str, Any] | None = attrs.get("external_features")
        stored = FbankConfig.from_dict(attrs["features"])
        self.config = stored if cmvn is None else replace(stored, cmvn=cmvn)
        self.fingerprint: str = attrs["fingerprint"]
        if self.config.cmvn != stored.cmvn:
            self.fingerprint = short_hash([self.fingerprint, "cmvn", self.config.cmvn])
        # True: every array's chunks carry CRCs and its content a recorded sha256
        self.checksummed = attrs.get(ARRAYS_ATTR) is not None
        self._arrays = open_arrays(group, location, attrs)
        small = [path for path in self._arrays if path not in FRAME_ARRAYS]
        data = read_whole(self._arrays, small, location, attrs)  # digests checked
        problems = structure_problems(attrs, self._arrays, data)
        if problems:
            raise StoreIntegrityError(f"{location}: {problems[0]}")
        self.offsets = data["offsets"].astype(np.int64)  # (N + 1,)
        self.num_frames = np.diff(self.offsets)  # (N,)
        self.ids = decode_strings(data, "ids")
        self.speakers = decode_strings(data, "speakers")
        # transcripts ("" where an utterance has none); None: the store keeps none
        self.texts: list[str] | None = (
            decode_strings(data, "texts") if "texts/utf8" in data else None
        )
        self._split_names = list(attrs["split_names"])
        self._split_codes = data["split"]  # (N,) uint8
        self.splits = [self._split_names[c] for c in self._split_codes]
        self.durations = data["durations"].astype(np.float32)  # (N,)
        self.clip_labels = (
            data["clip_labels"].astype(np.int64) if self.task == "clip" else None
        )  # (N,)
        self.cmvn_mean = data["cmvn/mean"]  # (F,)
        self.cmvn_std = data["cmvn/std"]  # (F,)
        self.skipped = [tuple(entry) for entry in attrs.get("skipped", [])]
        self._feats = self._arrays["feats"]
        self._frame_labels = self._arrays["frame_labels"] if self.task == "frame" else None
        self._index = {utt_id: i for i, utt_id in enumerate(self.ids)}
        self._cache: dict[str, tuple[int, int, Any]] = {}

    @classmethod
    def open(cls, location: str | Path, *, cmvn: Cmvn | None = None) -> FeatureStore:
        """Open the store at a local path or fsspec URL; ``cmvn`` overrides the stored mode."""
        if not is_url(location) and not Path(location).exists():
            raise CorpusError(f"feature store not found: {location}")
        try:
            group = open_group(location, mode="r")
        except (FileNotFoundError, ValueError) as error:
            raise CorpusError(
                f"feature store not found or not a Zarr group: {location} ({type(error).__name__})"
            ) from None
        try:
            return cls(group, str(location), cmvn)
        except (KeyError, TypeError, IndexError, AttributeError) as error:
            raise StoreFormatError(
                f"{location}: feature store attributes damaged or incomplete "
                f"({type(error).__name__}: {error})"
            ) from None

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"FeatureStore({self.location!r}, task={self.task}, utterances={len(self)}, "
            f"frames={int(self.offsets[-1])}, fingerprint={self.fingerprint})"
        )

    @property
    def level(self) -> Level:
        """The labels' level (``frame`` or ``utt``); ``CorpusError`` for a transcribed store,
        which has none (every use of its labels fails with that one line)."""
        if self.task == TRANSCRIBED:
            raise transcripts_only(self.location)
        return task_level(self.task)

    @property
    def labels(self) -> LabelSet:
        """The label set; ``CorpusError`` for a transcribed store (see ``level``)."""
        if self._labels is None:
            raise transcripts_only(self.location)
        return self._labels

    @property
    def dim(self) -> int:
        """F, the feature dimension."""
        return self.config.num_mel_bins

    @property
    def feature_fingerprint(self) -> str:
        """What the features are, for a model card: the config's fingerprint for fbank
        stores; for external features also their kind, dimension and config (not their
        files, so one model fits the train and test features of one Kaldi setup)."""
        if self.external is None:
            return self.config.fingerprint
        what = {key: self.external[key] for key in ("kind", "dim", "config")}
        return short_hash([self.config.fingerprint, what])

    def index_of(self, utt_id: str) -> int:
        try:
            return self._index[utt_id]
        except KeyError:
            raise CorpusError(f"{self.location}: no utterance {utt_id!r}") from None

    def indices(self, split: str | None = None) -> np.ndarray:
        """Utterance indices (int64) of ``split`` (all when None; a name or a subset such as
        ``train[:10%]``, see ``kdpipe.corpus.subsets``), in store order."""
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

    def _rows(self, array: Any, name: str, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of ``array`` (``name`` keys its cache), through a one-block cache of
        whole chunks so reading utterances in order decompresses each chunk once. Read-only."""
        first, stop, block = self._cache.get(name, (0, 0, None))
        if block is None or lo < first or hi > stop:
            chunk = array.chunks[0]
            first, stop = lo // chunk * chunk, min(-(-hi // chunk) * chunk, array.shape[0])
            block = read_array(array, first, stop, self.location, name)
            block.flags.writeable = False
            self._cache[name] = (first, stop, block)
        return block[lo - first : hi - first]

    def raw_features(self, i: int) -> np.ndarray:
        """(T, F) float32 features of utterance ``i`` as stored (no CMVN; read-only)."""
        return self._rows(self._feats, "feats", *self._span(i))

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
        if self.task == TRANSCRIBED:
            raise transcripts_only(self.location)
        if self._frame_labels is None:
            raise CorpusError(f"{self.location}: a clip-task store has no frame labels")
        return self._rows(self._frame_labels, "frame_labels", *self._span(i)).astype("int64")

    def read_utterances(
        self, index: np.ndarray, gap: int = 0
    ) -> list[tuple[np.ndarray, np.ndarray | None]]:
        """Raw (T_i, F) float32 features and (T_i,) int32 frame labels (None in a clip-task
        store) of utterances ``index`` (increasing), as stored: no CMVN.

        Reads in runs, one slice of each array per run: a run is utterances whose stored
        frames lie at most ``gap`` frames apart (0: only neighbours in store order), so a
        larger ``gap`` reads a few unwanted frames to save slices. One pair per utterance,
        aligned with ``index``; the arrays are views into the run's slice.
        """
        index = np.asarray(index, dtype=np.int64)  # (N_sel,)
        if len(index) == 0:
            return []
        starts, stops = self.offsets[index], self.offsets[index + 1]  # (N_sel,) each
        breaks = np.flatnonzero(starts[1:] - stops[:-1] > gap) + 1
        out: list[tuple[np.ndarray, np.ndarray | None]] = []
        for run in np.split(np.arange(len(index)), breaks):  # positions into index
            lo, hi = int(starts[run[0]]), int(stops[run[-1]])
            feats = read_array(self._feats, lo, hi, self.location, "feats")  # (T_run, F)
            labels = (
                None
                if self._frame_labels is None
                else read_array(self._frame_labels, lo, hi, self.location, "frame_labels")
            )
            for pos in run:
                first, stop = int(starts[pos]) - lo, int(stops[pos]) - lo
                out.append((feats[first:stop], None if labels is None else labels[first:stop]))
        return out

    def load_split(self, split: str) -> tuple[list[np.ndarray], list[np.ndarray] | np.ndarray]:
        """Features (CMVN applied) and labels of ``split`` (a subset spec too), in store order.

        Returns N_split (T_i, F) arrays and either N_split (T_i,) int64 frame-label arrays
        (frame task) or (N_split,) int64 clip labels. Reads each contiguous run in one slice.
        ``CorpusError`` for a transcribed store (no labels; ``read_utterances`` reads its
        features).
        """
        if self.task == TRANSCRIBED:
            raise transcripts_only(self.location)
        idx = self.indices(split)
        raw = self.read_utterances(idx)
        feats = [self.normalize(utt_feats) for utt_feats, _ in raw]
        clip = self.clip_labels
        if clip is not None:
            return feats, clip[idx]
        return feats, [np.asarray(utt_labels, dtype=np.int64) for _, utt_labels in raw]

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
