"""``TargetStream``: a PyTorch ``IterableDataset`` of padded KD batches, streamed from target
stores joined with a feature store by utterance id.

Each batch holds the student's input (the features cropped to the input window the teacher
saw), the teacher's sparse targets and the hard labels, both already at the student's
output rate (``targets.teacher_rows``), plus a per-utterance weight (the weight of the store
it came from when several are mixed). Order and splitting across DataLoader workers and DDP
ranks follow ``kdpipe.learn.epoch_order``. Legend: B batch, T input frames, F features, T' student
output frames, K kept entries per row, C classes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from kdpipe.batching import pad_features, subsample_labels
from kdpipe.learn.compat import check_frame_counts, crop_windows, join_ids
from kdpipe.learn.data import Batch, SoftTargets
from kdpipe.learn.epoch_order import ExampleTable, block_ids, interleave, shard_plan
from kdpipe.learn.targets import pad_rows, teacher_rows
from kdpipe.losses import IGNORE


def fixed_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Make glibc serve allocations >= ``nbytes`` with mmap, returned to the OS on free.

    glibc raises its mmap threshold each time a large block is freed, after which blocks of
    that size come from the heap and fragment it: with batches of varying shapes, RSS then
    creeps up over an epoch (measured: +35 MB per 400k frames streamed, see
    ``benchmarks/learn_memory.py``). A fixed threshold keeps peak memory flat. No-op (False)
    outside glibc.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-3, int(nbytes)))  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Example:
    """One utterance ready to batch (numpy; a copy, never a view of a block)."""

    x: np.ndarray  # (T, F) float32 cropped features
    y: np.ndarray  # (T',) int64 hard labels at the student rate (IGNORE = none), or (1,)
    idx: np.ndarray  # (T', K) int64
    logp: np.ndarray  # (T', K) float32, -inf in empty slots
    tail: np.ndarray  # (T',) float32
    valid: np.ndarray  # (T',) bool rows with a teacher target


class TargetStream(IterableDataset):
    """Stream KD batches from ``targets`` joined with split ``split`` of the feature store
    ``corpus``. A target is a store location, a (location, weight) pair, or a (location,
    weight, split) triple whose utterances come from another split of the corpus (e.g. an
    unlabelled set mixed in with its own weight).

    ``subsampling`` and ``level`` are the student's. ``rank``/``world`` default to the
    ``torchrun`` environment; ``num_workers`` must be the DataLoader's (``loader()`` makes
    one). Call ``set_epoch(epoch)`` before each epoch; ``skip`` batches already trained.
    """

    def __init__(
        self,
        targets: Sequence[str | tuple[str, float] | tuple[str, float, str]],
        corpus: str,
        split: str = "train",
        *,
        batch_frames: int = 4000,
        seed: int = 0,
        subsampling: int = 1,
        level: str = "frame",
        hard_labels: str = "auto",
        block_frames: int = 1 << 18,
        buffer_utts: int = 512,
        window_utts: int = 128,
        num_workers: int = 0,
        rank: int | None = None,
        world: int | None = None,
        allow_partial: bool = False,
        labels: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        fixed_mmap_threshold()  # flat peak memory whatever the corpus size
        items = [(t,) if isinstance(t, str) else tuple(t) for t in targets]
        self.locations = [str(t[0]) for t in items]
        self.weights = np.array([float(t[1]) if len(t) > 1 else 1.0 for t in items], np.float32)
        self.splits = [str(t[2]) if len(t) > 2 else split for t in items]
        self.corpus_location, self.split = str(corpus), split
        self.batch_frames, self.seed = batch_frames, seed
        self.subsampling, self.level = int(subsampling), level
        self.block_frames, self.buffer_utts, self.window_utts = (
            block_frames,
            buffer_utts,
            window_utts,
        )
        self.num_workers = num_workers
        self.rank = int(os.environ.get("RANK", "0")) if rank is None else rank
        self.world = int(os.environ.get("WORLD_SIZE", "1")) if world is None else world
        self.epoch, self.skip = 0, 0
        self._open()
        if labels is not None:
            for r in self._readers:
                r.check_labels(labels)
        self.hard_source = self._pick_hard(hard_labels)
        self.table = self._build_table(allow_partial)
        self.members = self.table.block_members()

    # -- opening and the index ----------------------------------------------------------
    def _open(self) -> None:
        from kdpipe.corpus.featstore import FeatureStore
        from kdpipe.store.reader import StoreReader

        self._pid = os.getpid()
        self._readers = [StoreReader(loc) for loc in self.locations]
        self._corpus = FeatureStore.open(self.corpus_location)

    def _pick_hard(self, choice: str) -> str:
        lvl = self.level
        in_store = all(lvl in r.meta.hard_labels for r in self._readers)
        if choice == "auto":
            return "corpus"  # every feature store carries labels of its task
        if choice == "store" and not in_store:
            from kdpipe.errors import ConfigError

            raise ConfigError(f"hard_labels=store but a store has no {lvl}-level hard labels")
        return choice

    def _build_table(self, allow_partial: bool) -> ExampleTable:
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("src", "pos", "fidx", "win", "blk")}
        key0 = 0
        for s, r in enumerate(self._readers):
            pos, fidx = join_ids(r, self._corpus, self.splits[s], allow_partial)
            win = crop_windows(r, pos, self._corpus, fidx)
            if self.level == "frame":
                check_frame_counts(r, pos, win, self.corpus_location)
            keys = block_ids([p.num_utterances for p in r.parts], r.num_frames, self.block_frames)
            blk = keys[pos]
            _, dense = np.unique(blk, return_inverse=True)
            cols["src"].append(np.full(len(pos), s, dtype=np.int64))
            cols["pos"].append(pos)
            cols["fidx"].append(fidx)
            cols["win"].append(win)
            cols["blk"].append(dense.reshape(-1).astype(np.int64) + key0)
            key0 += int(dense.max()) + 1
        return ExampleTable(
            source=np.concatenate(cols["src"]),
            pos=np.concatenate(cols["pos"]),
            fidx=np.concatenate(cols["fidx"]),
            window=np.concatenate(cols["win"]),
            block=np.concatenate(cols["blk"]),
            num_blocks=key0,
        )

    # -- the plan -----------------------------------------------------------------------
    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Stream epoch ``epoch`` from its batch ``skip`` (batches of this rank)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def _shard_plans(self, rank: int) -> list[list[np.ndarray]]:
        k = max(1, self.num_workers)
        return [
            shard_plan(
                self.table,
                self.members,
                seed=self.seed,
                epoch=self.epoch,
                shard=rank * k + w,
                num_shards=self.world * k,
                batch_frames=self.batch_frames,
                buffer_utts=self.buffer_utts,
                window_utts=self.window_utts,
            )
            for w in range(k)
        ]

    def num_batches(self) -> int:
        """Batches every rank runs this epoch (the smallest rank's count, so DDP ranks
        step together)."""
        return min(sum(len(p) for p in self._shard_plans(r)) for r in range(self.world))

    def rank_order(self) -> list[np.ndarray]:
        """This rank's batches (example ids) of the epoch, in the order they are yielded."""
        plans = self._shard_plans(self.rank)
        order = interleave([len(p) for p in plans], self.num_batches())
        return [plans[w][j] for w, j in order]

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if self._pid != os.getpid():
            self._open()  # a worker process: its own file handles and caches
        plans = self._shard_plans(self.rank)
        if info is None and len(plans) > 1:
            raise RuntimeError("TargetStream built for workers: iterate it via loader()")
        rest = interleave([len(p) for p in plans], self.num_batches())[self.skip :]
        # the DataLoader asks workers 0, 1, ... in turn: worker 0 plays the shard whose batch
        # comes next, so a resumed epoch continues in exactly the uninterrupted order
        role = (worker + (rest[0][0] if rest else 0)) % len(plans)
        yield from self._run(plans[role], [j for w, j in rest if w == role])

    def _run(self, plan: list[np.ndarray], todo: list[int]) -> Iterator[Batch]:
        if not todo:
            return
        needed = {int(e) for j in todo for e in plan[j]}
        loaded: dict[int, Example] = {}
        self.peak_held = 0  # most examples held in memory at once (bounded; see plan.py)
        for j in todo:
            batch = plan[j]
            missing = [int(e) for e in batch if int(e) not in loaded]
            if missing:
                for b in dict.fromkeys(int(self.table.block[e]) for e in missing):
                    want = [int(e) for e in self.members[b] if int(e) in needed]
                    loaded.update(self._load(want))
                self.peak_held = max(self.peak_held, len(loaded))
            yield self._collate([loaded.pop(int(e)) for e in batch], batch)

    def _load(self, ex: list[int]) -> dict[int, Example]:
        """Read the targets of examples ``ex`` (one block: one store, one part) and their
        features; convert the targets to the student's rate."""
        t = self.table
        src = int(t.source[ex[0]])
        reader = self._readers[src]
        block = reader.read([reader.ids[int(t.pos[e])] for e in ex])
        lvl = self.level
        rows = block.frame if lvl == "frame" else block.utt
        hard = block.hard_frame if lvl == "frame" else block.hard_utt
        assert rows is not None
        out: dict[int, Example] = {}
        for i in np.argsort(t.fidx[ex], kind="stable"):  # corpus order: sequential reads
            e = ex[int(i)]
            a, b = (int(v) for v in t.window[e])
            fi = int(t.fidx[e])
            x = self._corpus.features(fi)[a:b]  # (T, F)
            if lvl == "frame":
                lo, hi = int(block.frame_offsets[i]), int(block.frame_offsets[i + 1])
                n_out = -(-(b - a) // self.subsampling)
                raw = teacher_rows(n_out, self.subsampling, int(block.subsampling[i]))
                valid = raw < hi - lo
                sel = lo + np.minimum(raw, max(hi - lo - 1, 0))
                idx, logp, tail = pad_rows(rows.slice_rows(lo, hi)) if hi > lo else _empty(n_out)
                if hi > lo:
                    idx, logp, tail = idx[sel - lo], logp[sel - lo], tail[sel - lo]
                y = self._hard_frames(fi, a, b, n_out, hard, sel, valid)
            else:
                idx, logp, tail = pad_rows(rows.slice_rows(int(i), int(i) + 1))
                valid = np.ones(1, dtype=bool)
                y = self._hard_clip(fi, hard, int(i))
            out[e] = Example(np.array(x, np.float32), y, idx, logp, tail, valid)
        return out

    def _hard_frames(self, fi, a, b, n_out, hard, sel, valid) -> np.ndarray:
        if self.hard_source == "corpus":
            return subsample_labels(self._corpus.frame_labels(fi)[a:b], self.subsampling, n_out)
        if self.hard_source == "store" and hard is not None:
            h = hard[sel].astype(np.int64)
            none = np.iinfo(hard.dtype).max
            return np.where(valid & (h != none), h, IGNORE)
        return np.full(n_out, IGNORE, dtype=np.int64)

    def _hard_clip(self, fi: int, hard: np.ndarray | None, i: int) -> np.ndarray:
        if self.hard_source == "corpus" and self._corpus.clip_labels is not None:
            return np.array([self._corpus.clip_labels[fi]], dtype=np.int64)
        if self.hard_source == "store" and hard is not None:
            h = int(hard[i])
            return np.array([IGNORE if h == np.iinfo(hard.dtype).max else h], dtype=np.int64)
        return np.array([IGNORE], dtype=np.int64)

    def _collate(self, exs: list[Example], index: np.ndarray) -> Batch:
        x, lengths = pad_features([e.x for e in exs])  # (B, T, F), (B,)
        b = len(exs)
        t_out = max(len(e.y) for e in exs)
        k = max(e.idx.shape[1] for e in exs)
        y = torch.full((b, t_out), IGNORE, dtype=torch.int64)  # (B, T')
        idx = torch.zeros((b, t_out, k), dtype=torch.int64)  # (B, T', K)
        logp = torch.full((b, t_out, k), -torch.inf)  # (B, T', K)
        tail = torch.full((b, t_out), -torch.inf)  # (B, T')
        valid = torch.zeros((b, t_out), dtype=torch.bool)  # (B, T')
        for i, e in enumerate(exs):
            n, w = len(e.y), e.idx.shape[1]
            y[i, :n] = torch.from_numpy(e.y)
            idx[i, :n, :w] = torch.from_numpy(e.idx)
            logp[i, :n, :w] = torch.from_numpy(e.logp)
            tail[i, :n] = torch.from_numpy(e.tail)
            valid[i, :n] = torch.from_numpy(e.valid)
        if self.level != "frame":
            y = y[:, 0]  # (B,)
        weight = torch.from_numpy(self.weights[self.table.source[index]])  # (B,)
        soft = SoftTargets(idx, logp, tail, valid, weight)
        return Batch(x, lengths, y, np.asarray(index), soft)

    def loader(self, **kwargs: Any) -> DataLoader:
        """A DataLoader over this stream with ``num_workers`` workers (batches are made
        here, so ``batch_size=None``)."""
        return DataLoader(
            self,
            batch_size=None,
            num_workers=self.num_workers,
            prefetch_factor=4 if self.num_workers else None,
            **kwargs,
        )

    def describe(self, index: np.ndarray) -> list[str]:
        """Utterance ids of examples ``index`` (for error messages)."""
        t = self.table
        return [self._readers[int(t.source[e])].ids[int(t.pos[e])] for e in index]


def _empty(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (
        np.zeros((n, 1), np.int64),
        np.full((n, 1), -np.inf, np.float32),
        np.full(n, -np.inf, np.float32),
    )
