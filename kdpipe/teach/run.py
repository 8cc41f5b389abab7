"""``teach``: run the teacher(s) over a corpus once and write the target store.

The main thread reads features, pads batches and runs the members under
``torch.inference_mode``; a background thread applies the selection rule, encodes and
writes parts (``StoreWriter``), so the teacher never waits for the disk. A bounded queue
between them keeps memory flat. Legend: B batch, T frames, T' output frames, C classes.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.console import progress_bar
from kdpipe.corpus.views import crop_windows, utt_rng, view_lengths
from kdpipe.errors import ConfigError, KdpipeError
from kdpipe.teach import job
from kdpipe.teach.ensemble_yaml import EnsembleConfig

if TYPE_CHECKING:
    from kdpipe.corpus.featstore import FeatureStore

QUEUE_BATCHES = 8  # batches in flight to the writer thread: enough to ride out a flush


@dataclass
class TeachSummary:
    """What a teach run (one shard) did."""

    store: str
    shard: tuple[int, int]
    utterances: int = 0  # labelled by this run
    skipped: int = 0  # already committed (resumed run), not recomputed
    frames: int = 0  # target rows written (teacher output frames, or clips)
    bytes: int = 0  # bytes of the parts this run wrote
    seconds: float = 0.0
    forward_seconds: float = 0.0  # in the members' forward passes (+ copy to host)
    entropy_sum: float = 0.0
    tail_sum: float = 0.0
    correct: int = 0
    counted: int = 0
    parts: list[str] = field(default_factory=list)

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / max(self.frames, 1)

    @property
    def mean_entropy(self) -> float:
        """Mean entropy (nats) of the ensemble posterior per row."""
        return self.entropy_sum / max(self.frames, 1)

    @property
    def mean_tail_mass(self) -> float:
        """Mean probability mass the rule dropped per row."""
        return self.tail_sum / max(self.frames, 1)

    @property
    def accuracy(self) -> float | None:
        """Top-1 agreement with the corpus' hard labels; None without labels."""
        return self.correct / self.counted if self.counted else None

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "utterances": self.utterances,
            "skipped": self.skipped,
            "frames": self.frames,
            "bytes": self.bytes,
            "bytes_per_frame": self.bytes_per_frame,
            "seconds": self.seconds,
            "forward_seconds": self.forward_seconds,
            "frames_per_second": self.frames_per_second,
            "mean_entropy": self.mean_entropy,
            "mean_tail_mass": self.mean_tail_mass,
            "accuracy": self.accuracy,
            "parts": len(self.parts),
        }


def _hard_labels(
    fs: FeatureStore, raw: dict[int, tuple], u: dict, sub: int, rows: int, lv: str
) -> np.ndarray | int | None:
    """Hard labels at the teacher's output rate: frame j*s of the view, -1 where none
    (as ``kdpipe.losses.align_frame_labels``); the clip label for utterance level."""
    i = u["index"]
    if lv == "utt":
        return int(fs.clip_labels[i]) if fs.clip_labels is not None else None
    y = raw[i][1]
    if y is None:
        return None
    start, stop = u["window"]
    y = y[start : None if stop < 0 else stop][::sub][:rows].astype(np.int64)  # (<=T',)
    y = np.where(y < 0, -1, y)
    return np.concatenate([y, np.full(rows - len(y), -1, np.int64)]) if len(y) < rows else y


class _Writer(threading.Thread):
    """Selection, statistics and store writes, off the teacher's thread."""

    def __init__(self, writer: Any, meta: Any, ens: EnsembleConfig, summary: TeachSummary):
        super().__init__(name="kdpipe-teach-writer", daemon=True)
        self.writer, self.meta, self.ens, self.summary = writer, meta, ens, summary
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.abandoned = False

    def run(self) -> None:
        try:
            while (item := self.queue.get()) is not None:
                self._batch(*item)
            if not self.abandoned:
                self.writer.close()  # commits the last part
        except BaseException as e:  # handed to the main thread by put()
            self.error = e

    def abandon(self) -> None:
        """Stop without committing the buffer (the main thread failed); committed parts
        stay, so a rerun resumes from them."""
        self.abandoned = True
        try:
            self.queue.put(None, timeout=5)
        except queue.Full:
            return
        self.join(timeout=60)

    def put(self, item: Any) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def _batch(self, utts: list[dict], logp: np.ndarray, lens: np.ndarray, mem: list) -> None:
        """Select, encode and add one batch's utterances; accumulate the summary."""
        rule, lv, s = self.meta.rule, self.meta.levels[0], self.summary
        for b, u in enumerate(utts):
            uid = u["id"]
            n = int(lens[b]) if lv == "frame" else 1
            lp = logp[b, :n] if lv == "frame" else logp[b : b + 1]  # (T', C) or (1, C)
            rng = utt_rng(self.ens.seed, uid, "sample") if rule.name == "sample" else None
            rows = rule.apply(lp, rng=rng)
            members = []
            if self.meta.members:
                for j, m in enumerate(mem):
                    mlp = m[b, :n] if lv == "frame" else m[b : b + 1]
                    r = utt_rng(self.ens.seed, uid, f"sample-{j}") if rng is not None else None
                    members.append(rule.apply(mlp, rng=r))
            hard = u["hard"]
            added = self.writer.add(
                uid,
                **{lv: rows, f"members_{lv}": members},
                **({f"hard_{lv}": hard} if lv in self.meta.hard_labels else {}),
                input_window=u["window"],
            )
            if not added:
                continue
            p = np.exp(lp.astype(np.float64))
            s.utterances += 1
            s.frames += n
            s.entropy_sum += float(-(p * np.where(p > 0, lp, 0.0)).sum())
            s.tail_sum += float(rows.tail_mass().sum())
            if hard is not None:
                h = np.atleast_1d(np.asarray(hard))
                ok = h >= 0
                s.correct += int((lp.argmax(-1)[ok] == h[ok]).sum())
                s.counted += int(ok.sum())


def teach(
    ens: EnsembleConfig,
    corpus: str | Path,
    out: str | Path,
    *,
    split: str | None = "train",
    ids: list[str] | None = None,
    shard: str | tuple[int, int] | None = None,
    overwrite: bool = False,
    batch_frames: int = 20000,
    part_frames: int | None = None,
    device: str = "cpu",
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
    trust_custom_code: bool = False,
) -> TeachSummary:
    """Label ``split`` (or ``ids``; both None: the whole corpus) of feature store ``corpus``
    with ``ens`` into the target store ``out``.

    Resumable (a rerun skips what is committed), shardable (``shard`` ``"i/N"``, or
    torchrun's RANK/WORLD_SIZE), and refuses a store made with other settings unless
    ``overwrite``. Every check that can fail on the inputs runs before inference.
    """
    import torch

    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.models.device import pick_device
    from kdpipe.store.writer import PART_FRAMES, StoreWriter
    from kdpipe.teach.ensemble import Ensemble, load_members, plan_members

    t0 = time.perf_counter()
    rank, world = shard if isinstance(shard, tuple) else job.parse_shard(shard)
    if overwrite and world > 1:
        raise ConfigError("--overwrite with several shards would race: clear the store first")
    fs = FeatureStore.open(corpus)
    sel = job.select(fs, split, ids)
    members, level, sub = plan_members(ens, fs)
    sel_ids = [fs.ids[i] for i in sel.index]
    windows = crop_windows(ens.view, sel_ids, fs.num_frames[sel.index], fs.config.frame_shift_ms)
    lengths = view_lengths(windows, fs.num_frames[sel.index])
    meta = job.store_meta(ens, members, fs, level, sub, sel)
    batches = job.plan_batches(sel.index, lengths, batch_frames)[rank::world]
    views = {int(i): (int(w[0]), int(w[1])) for i, w in zip(sel.index, windows, strict=True)}
    dev = pick_device(device)
    if dev.type == "cuda" and dev.index is None and world > 1:  # torchrun: one GPU per rank
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    load_members(members, dev, trust_custom_code)
    writer = StoreWriter(
        out, meta, storage_options=storage_options, overwrite=overwrite,
        part_frames=part_frames or PART_FRAMES, shard=f"shard{rank}of{world}",
    )  # fmt: skip
    summary = TeachSummary(str(out), (rank, world))
    done = writer.committed
    todo = [(w, b) for w, b in batches if any(fs.ids[i] not in done for i in b)]
    summary.skipped = sum(fs.ids[i] in done for _, b in batches for i in b)
    model = Ensemble(ens, members, level, sub, len(fs.labels))
    worker = _Writer(writer, meta, ens, summary)
    worker.start()
    total = int(sum(lengths[np.searchsorted(sel.index, b)].sum() for _, b in todo))
    try:
        with (
            torch.inference_mode(),
            progress_bar("teach", total, enabled=progress, unit="frames") as advance,
        ):
            for group in _by_window(todo):
                raw = _read_group(fs, np.unique(np.concatenate(group)))  # i -> (feats, labels)
                for b in group:
                    x, ln, utts = _batch(fs, b, raw, views, dev)
                    tf = time.perf_counter()
                    logp, out_len, parts = model(x, ln, [u["id"] for u in utts])
                    logp_np, out_len = logp.cpu().numpy(), out_len.cpu().numpy()
                    keep = [p.cpu().numpy() for p in parts] if meta.members else []
                    summary.forward_seconds += time.perf_counter() - tf
                    for u, n in zip(utts, out_len, strict=True):
                        u["hard"] = _hard_labels(fs, raw, u, sub, int(n), meta.levels[0])
                    worker.put((utts, logp_np, out_len, keep))
                    advance(int(ln.sum()))
    except BaseException:
        if worker.error is None:
            worker.abandon()
        raise
    worker.put(None)
    worker.join()
    if worker.error is not None:
        raise worker.error
    summary.parts = list(writer.parts_written)
    summary.bytes = _part_bytes(str(out), summary.parts, storage_options)
    summary.seconds = time.perf_counter() - t0
    return summary


def _by_window(batches: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
    """Consecutive batches of one planned window: they share one feature read."""
    groups: list[list[np.ndarray]] = []
    prev = None
    for w, b in batches:
        if w != prev:
            groups.append([])
            prev = w
        groups[-1].append(b)
    return groups


def _read_group(fs: FeatureStore, index: np.ndarray, gap: int = 16384) -> dict[int, tuple]:
    """Raw (T_i, F) features and (T_i,) frame labels (or None) of utterances ``index``
    (sorted), read in few slices: utterances closer than ``gap`` frames share one read."""
    spans: list[list[int]] = []
    for i in index:
        a, b = int(fs.offsets[i]), int(fs.offsets[i + 1])
        if spans and a - spans[-1][1] <= gap:
            spans[-1][1] = max(spans[-1][1], b)
        else:
            spans.append([a, b])
    out: dict[int, tuple] = {}
    k = 0
    for lo, hi in spans:
        feats = fs.group["feats"][lo:hi]  # (T_span, F)
        labs = fs.group["frame_labels"][lo:hi] if fs.task == "frame" else None  # (T_span,)
        while k < len(index) and int(fs.offsets[index[k]]) < hi:
            i = int(index[k])
            a, b = int(fs.offsets[i]) - lo, int(fs.offsets[i + 1]) - lo
            out[i] = (feats[a:b], None if labs is None else labs[a:b])
            k += 1
    return out


def _batch(
    fs: FeatureStore, b: np.ndarray, raw: dict[int, tuple], views: dict, dev: Any
) -> tuple[Any, Any, list[dict]]:
    """x (B, T, F) zero-padded views, lengths (B,), and per-utterance records."""
    from kdpipe.batching import pad_features

    xs, utts = [], []
    for i in b:
        i = int(i)
        start, stop = views[i]
        xs.append(fs.normalize(raw[i][0])[start : None if stop < 0 else stop])  # (T_view, F)
        utts.append({"id": fs.ids[i], "index": i, "window": (start, stop)})
    x, ln = pad_features(xs)
    return x.to(dev), ln.to(dev), utts


def _part_bytes(location: str, parts: list[str], options: dict[str, Any] | None) -> int:
    """Bytes on storage of the given parts (0 where the filesystem cannot tell)."""
    try:
        from fsspec.core import url_to_fs

        fs, root = url_to_fs(location, **(options or {}))
        return int(sum(fs.du(f"{root.rstrip('/')}/parts/{p}") for p in parts))
    except (KdpipeError, OSError, ValueError, NotImplementedError):
        return 0
