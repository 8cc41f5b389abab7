"""``teach``: run the teacher(s) over a corpus once and write the target store.

The main thread reads features, pads batches and runs the members under
``torch.inference_mode``; a background thread encodes and writes parts (``StoreWriter``),
so the teacher never waits for the disk. A bounded queue between them keeps memory flat.
Under the top-k rule, selection and the quality statistics run on the teacher's device
(``kdpipe.device_essence``) and only k entries a frame cross to the host
(``kdpipe.host_device``: pinned, non-blocking on CUDA); the other rules get the full
posteriors on the host and select there (``PosteriorWriter.add``). Legend: B batch,
T frames, T' output frames, C classes, k kept.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe import outputs
from kdpipe.console import progress_bar
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.views import crop_windows, labels_at_rate, view_lengths
from kdpipe.device_essence import top_and_entropy
from kdpipe.errors import ConfigError
from kdpipe.essence import top_rows
from kdpipe.host_device import HostCopy, to_device
from kdpipe.levels import Level
from kdpipe.models.device import pick_device
from kdpipe.precision import autocast
from kdpipe.sparse import SparseRows
from kdpipe.store.posteriors import PosteriorWriter, Totals, quality_of
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import PART_FRAMES, StoreWriter
from kdpipe.teach import job
from kdpipe.teach.ensemble import Ensemble, Plan, load_members, plan_members
from kdpipe.teach.ensemble_yaml import EnsembleConfig

QUEUE_BATCHES = 8  # batches in flight to the writer thread: enough to ride out a flush
READ_GAP = 16384  # input frames between two utterances of a window that still share a read

RawUtterances = dict[int, tuple[np.ndarray, np.ndarray | None]]  # index -> (feats, labels)


@dataclass(kw_only=True)
class TeachSummary(Totals):
    """What a teach run (one shard) did."""

    store: str
    shard: tuple[int, int]
    forward_seconds: float = 0.0  # the members' forward passes and device-side selection
    writer_seconds: float = 0.0  # the writer thread busy (host selection, encoding, writes)
    wait_seconds: float = 0.0  # the main thread waiting for the writer (full queue, the end)
    setup_seconds: float = 0.0  # before the first batch: checks, plan, members loaded

    @property
    def host_seconds(self) -> float:
        """The main thread's own host work after setup: reading, CMVN, padding, labels
        (what bounds a GPU teacher, beside ``writer_seconds``)."""
        return self.seconds - self.setup_seconds - self.forward_seconds - self.wait_seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            **self.counts(),
            "frames": self.frames,
            "bytes": self.bytes,
            "bytes_per_frame": self.bytes_per_frame,
            "seconds": self.seconds,
            "forward_seconds": self.forward_seconds,
            "writer_seconds": self.writer_seconds,
            "wait_seconds": self.wait_seconds,
            "setup_seconds": self.setup_seconds,
            "frames_per_second": self.frames_per_second,
            "mean_entropy": self.mean_entropy,
            "mean_tail_mass": self.mean_tail_mass,
            "accuracy": self.accuracy,
            "parts": len(self.parts),
        }


@dataclass
class _Utterance:
    """One utterance of a batch, as the writer thread needs it."""

    id: str
    index: int  # in the feature store
    window: tuple[int, int]  # input frames [start, stop) of the view; stop -1: to the end
    hard: np.ndarray | int | None = None  # hard labels at the output rate (``_hard_labels``)


@dataclass
class _Batch:
    """What the teacher thread hands to the writer thread for one batch: the full
    posteriors (host selection), or their top-k selected on the device."""

    utts: list[_Utterance]
    lengths: np.ndarray  # (B,) output frames
    posteriors: HostCopy  # full: the ensemble's (B, T', C) or (B, C) log-probs, then each
    # kept member's; top-k: the ensemble's values, indices (B, T', k) and entropy (B, T'),
    # then each kept member's values and indices
    top: bool  # posteriors holds the top-k selected on the device


def _hard_labels(
    store: FeatureStore, raw: RawUtterances, utt: _Utterance, sub: int, rows: int, level: Level
) -> np.ndarray | int | None:
    """Hard labels at the teacher's output rate: frame j*s of the view, -1 where none
    (as ``kdpipe.losses.align_frame_labels``); the clip label for utterance level."""
    if level == "utt":
        return int(store.clip_labels[utt.index]) if store.clip_labels is not None else None
    labels = raw[utt.index][1]
    return None if labels is None else labels_at_rate(labels, utt.window, sub, rows)


def _rows_of(batch: np.ndarray, row: int, frames: int, level: Level) -> np.ndarray:
    """Utterance ``row`` of a batch array (B, T', ...) or (B, ...): its first ``frames``
    output frames (T', ...), or its (1, ...) row at utterance level."""
    return batch[row, :frames] if level == "frame" else batch[row : row + 1]


class _Writer(threading.Thread):
    """Selection, statistics and store writes, off the teacher's thread."""

    def __init__(
        self,
        writer: StoreWriter,
        meta: StoreMeta,
        ens: EnsembleConfig,
        level: Level,
        summary: TeachSummary,
    ):
        super().__init__(name="kdpipe-teach-writer", daemon=True)
        self.writer, self.meta, self.ens, self.summary = writer, meta, ens, summary
        self.posteriors = PosteriorWriter(writer, ens.seed)
        self.level = level  # the store's one level (meta.levels)
        self.queue: queue.Queue[_Batch | None] = queue.Queue(maxsize=QUEUE_BATCHES)
        self.error: BaseException | None = None
        self.abandoned = False

    def run(self) -> None:
        try:
            while (batch := self.queue.get()) is not None:
                busy = time.perf_counter()
                self._batch(batch)
                self.summary.writer_seconds += time.perf_counter() - busy
            busy = time.perf_counter()
            if not self.abandoned:
                self.writer.close()  # commits the last part
            self.summary.writer_seconds += time.perf_counter() - busy
        except BaseException as error:  # handed to the main thread by put()
            self.error = error

    def abandon(self) -> None:
        """Stop without committing the buffer (the main thread failed); committed parts
        stay, so a rerun resumes from them."""
        self.abandoned = True
        try:
            self.queue.put(None, timeout=5)
        except queue.Full:
            return
        self.join(timeout=60)

    def put(self, batch: _Batch | None) -> None:
        """Queue a batch (None: the end), re-raising the writer thread's error if it failed."""
        waiting = time.perf_counter()
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.queue.put(batch, timeout=0.2)
                self.summary.wait_seconds += time.perf_counter() - waiting
                return
            except queue.Full:
                continue

    def _batch(self, batch: _Batch) -> None:
        """Select (unless the device did), measure and add one batch's utterances;
        accumulate the summary."""
        level, summary = self.level, self.summary
        arrays = batch.posteriors.wait()
        for row, utt in enumerate(batch.utts):
            frames = int(batch.lengths[row]) if level == "frame" else 1
            rows = [_rows_of(a, row, frames, level) for a in arrays]  # (T', ...) or (1, ...)
            if batch.top:
                values, indices, entropy, *member_top = rows
                added = self.posteriors.add_selected(
                    utt.id,
                    self._rows(indices, values),
                    quality_of(entropy, indices[:, 0], utt.hard),
                    members=[
                        self._rows(i, v)
                        for v, i in zip(member_top[::2], member_top[1::2], strict=True)
                    ],
                    hard=utt.hard,
                    window=utt.window,
                )
            else:
                logp, *members = rows  # (T', C) or (1, C) each
                added = self.posteriors.add(
                    utt.id, logp, members=members, hard=utt.hard, window=utt.window
                )
            if added is not None:
                summary.count(added)

    def _rows(self, indices: np.ndarray, values: np.ndarray) -> SparseRows:
        """Top-k rows (R, k) selected on the device, with the tail of what they leave."""
        return top_rows(indices, values, len(self.meta.labels))


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
    threads: int = 0,
) -> TeachSummary:
    """Label ``split`` (or ``ids``; both None: the whole corpus) of feature store ``corpus``
    with ``ens`` into the target store ``out``.

    Resumable (a rerun skips what is committed), shardable (``shard`` ``"i/N"``, or
    torchrun's RANK/WORLD_SIZE), and refuses a store made with other settings unless
    ``overwrite``. Every check that can fail on the inputs runs before inference.
    ``threads`` > 0 sets torch's intra-op threads (0: torch's default).
    """
    if threads:
        torch.set_num_threads(threads)
    started = time.perf_counter()
    rank, world = shard if isinstance(shard, tuple) else job.parse_shard(shard)
    if overwrite and world > 1:
        raise ConfigError("--overwrite with several shards would race: clear the store first")
    outputs.claim_output(
        out, makes=outputs.TARGET_STORE, inputs=[corpus, *_member_paths(ens)],
        overwrite=overwrite, storage_options=storage_options,
    )  # fmt: skip
    features = FeatureStore.open(corpus)
    selection = job.select(features, split, ids)
    plan = plan_members(ens, features, selection.index, trust_custom_code)
    level, sub = plan.level, plan.subsampling
    selected_ids = [features.ids[i] for i in selection.index]
    frame_counts = features.num_frames[selection.index]
    frame_shift = features.config.frame_shift_ms
    windows = crop_windows(ens.view, selected_ids, frame_counts, frame_shift)
    lengths = view_lengths(windows, frame_counts)
    meta = job.store_meta(ens, plan, features, selection)
    batches = job.plan_batches(selection.index, lengths, batch_frames)[rank::world]
    views = {
        int(i): (int(start), int(stop))
        for i, (start, stop) in zip(selection.index, windows, strict=True)
    }
    torch_device = pick_device(device)
    if torch_device.type == "cuda" and torch_device.index is None and world > 1:
        torch_device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # torchrun
    load_members(plan.members, torch_device)
    writer = StoreWriter(
        out, meta, storage_options=storage_options, overwrite=overwrite,
        part_frames=part_frames or PART_FRAMES, shard=f"shard{rank}of{world}",
    )  # fmt: skip
    summary = TeachSummary(store=str(out), shard=(rank, world))
    done = writer.committed
    summary.before = len(done)
    todo = [
        (window, batch)
        for window, batch in batches
        if any(features.ids[i] not in done for i in batch)
    ]
    summary.skipped = sum(features.ids[i] in done for _, batch in batches for i in batch)
    model = Ensemble(ens, plan)
    top_k = int(meta.rule.params["k"]) if meta.rule.name == "topk" else None  # on the device
    worker = _Writer(writer, meta, ens, level, summary)
    worker.start()
    total = int(sum(lengths[np.searchsorted(selection.index, batch)].sum() for _, batch in todo))
    summary.setup_seconds = time.perf_counter() - started
    try:
        with (
            torch.inference_mode(),
            progress_bar("teach", total, enabled=progress, unit="frames") as advance,
        ):
            for window_batches in _by_window(todo):
                raw = _read_window(features, window_batches)
                for batch in window_batches:
                    inputs, frames, utts = _batch_inputs(
                        plan, features, batch, raw, views, torch_device
                    )
                    x_lengths = to_device(torch.from_numpy(frames), torch_device)  # (B,)
                    forward_start = time.perf_counter()
                    with autocast(torch_device, ens.precision):  # the members' forward
                        logp, _, parts = model(inputs, x_lengths, [utt.id for utt in utts])
                    posteriors = _to_host(logp, parts if meta.members else [], top_k)
                    host_lengths = _output_rows(frames, level, sub)  # no device sync
                    summary.forward_seconds += time.perf_counter() - forward_start
                    for utt, rows in zip(utts, host_lengths, strict=True):
                        # a CTC teacher's tokens are not the corpus' labels: no agreement
                        if plan.ctc is None:
                            utt.hard = _hard_labels(features, raw, utt, sub, int(rows), level)
                    worker.put(_Batch(utts, host_lengths, posteriors, top_k is not None))
                    advance(int(frames.sum()))
    except BaseException:
        if worker.error is None:
            worker.abandon()
        writer.release()
        raise
    worker.put(None)
    waiting = time.perf_counter()
    worker.join()
    summary.wait_seconds += time.perf_counter() - waiting
    if worker.error is not None:
        writer.release()
        raise worker.error
    summary.settle(writer.dropped_at_commit, writer.num_committed)  # counted as added
    summary.parts = list(writer.parts_written)
    summary.bytes = writer.bytes_written()
    summary.seconds = time.perf_counter() - started
    return summary


def _output_rows(frames: np.ndarray, level: Level, sub: int) -> np.ndarray:
    """(B,) output rows of utterances of ``frames`` (B,) view frames, as ``Ensemble`` makes
    them: ceil(frames / s), or 1 at utterance level; known on the host, so the loop never
    waits for the device before queueing the next batch."""
    return np.ones_like(frames) if level == "utt" else -(-frames // sub)


def _to_host(logp: torch.Tensor, members: list[torch.Tensor], k: int | None) -> HostCopy:
    """What the writer thread needs of a batch, on its way to the host: the top-k of the
    ensemble (values, indices, entropy) and of each kept member (values, indices),
    selected on the device; or, for the other rules (k None), the full log-probs."""
    if k is None:
        return HostCopy(logp, *members)
    top = top_and_entropy(logp, k)
    kept = [top.values, top.indices, top.entropy]
    for member in members:
        values, indices = member.topk(k, dim=-1)  # (B, T', k) each, sorted
        kept += [values, indices.to(torch.int32)]
    return HostCopy(*kept)


def _member_paths(ens: EnsembleConfig) -> list[str]:
    """What the members read besides the corpus: their files and feature stores."""
    paths = []
    for member in ens.members:
        paths += [member.checkpoint, member.path, member.weights, member.input.features]
    return [p for p in paths if p]


def _by_window(batches: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
    """Consecutive batches of one planned window: they share one feature read."""
    groups: list[list[np.ndarray]] = []
    previous = None
    for window, batch in batches:
        if window != previous:
            groups.append([])
            previous = window
        groups[-1].append(batch)
    return groups


def _read_window(features: FeatureStore, batches: list[np.ndarray]) -> RawUtterances:
    """Raw (T_i, F) features and (T_i,) frame labels (or None) of every utterance of one
    window's batches, read in few slices (``FeatureStore.read_utterances``)."""
    index = np.unique(np.concatenate(batches))  # sorted
    read = features.read_utterances(index, gap=READ_GAP)
    return dict(zip(index.tolist(), read, strict=True))


def _batch_inputs(
    plan: Plan,
    features: FeatureStore,
    batch: np.ndarray,
    raw: RawUtterances,
    views: dict[int, tuple[int, int]],
    device: torch.device,
) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], np.ndarray, list[_Utterance]]:
    """Each input source's padded batch (input key -> (x, lengths)), the view lengths (B,)
    of the corpus' features (int64, on the host), and per-utterance records."""
    index = batch.tolist()
    feats = {i: raw[i][0] for i in index}
    inputs = {
        key: source.batch(index, views, feats, device) for key, source in plan.sources.items()
    }
    frames = np.array(
        [_view_frames(views[i], int(features.num_frames[i])) for i in index], dtype=np.int64
    )
    utts = [_Utterance(features.ids[i], i, views[i]) for i in index]
    return inputs, frames, utts


def _view_frames(window: tuple[int, int], frames: int) -> int:
    """Input frames of a view [start, stop) (stop -1: to the end) of ``frames``."""
    start, stop = window
    return (frames if stop < 0 else min(stop, frames)) - start
