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

import ctypes
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from kdpipe.batching import pad_features, subsample_labels
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, TrainingError
from kdpipe.learn.compat import check_frame_counts, crop_windows, join_ids
from kdpipe.learn.data import Batch, SoftTargets
from kdpipe.learn.epoch_order import ExampleTable, block_ids, interleave, shard_plan
from kdpipe.learn.quality_filter import QualityFilter
from kdpipe.learn.targets import pad_rows, teacher_rows
from kdpipe.losses import IGNORE
from kdpipe.store.reader import StoreReader


def fixed_mmap_threshold(nbytes: int = 1 << 20) -> bool:
    """Make glibc serve allocations >= ``nbytes`` with mmap, returned to the OS on free.

    glibc raises its mmap threshold each time a large block is freed, after which blocks of
    that size come from the heap and fragment it: with batches of varying shapes, RSS then
    creeps up over an epoch (measured: +35 MB per 400k frames streamed, see
    ``benchmarks/learn_memory.py``). A fixed threshold keeps peak memory flat. No-op (False)
    outside glibc.
    """
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
    tokens: np.ndarray | None = None  # (L,) int64 CTC token ids (empty: no transcript)


class TargetStream(IterableDataset[Batch]):
    """Stream KD batches from ``targets`` joined with split ``split`` of the feature store
    ``corpus``. A target is a store location, a (location, weight) pair, or a (location,
    weight, split) triple whose utterances come from another split of the corpus (e.g. an
    unlabelled set mixed in with its own weight; None: ``split``), optionally followed by
    quality thresholds (``QualityFilter.from_dict``: drop or down-weight utterances by the
    teacher's quality on them; ``quality_reports`` says what they did).

    ``subsampling`` and ``level`` are the student's; ``tokens`` (CTC students) maps corpus
    utterance indices to their transcripts' token ids (batches carry them as
    ``Batch.tokens``; an utterance not in it has none). ``cache_bytes`` > 0 keeps the
    examples read (features cropped, targets at the student's rate) in memory across
    epochs up to that many bytes, so a split that fits is read once, as in-memory training
    reads it (in the training process: DataLoader workers start afresh each epoch).
    ``rank``/``world`` default to the
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
        tokens: dict[int, np.ndarray] | None = None,
        cache_bytes: int = 0,
    ) -> None:
        super().__init__()
        self.tokens = tokens
        # examples kept across epochs (read once), up to this many bytes; see ``_run``
        self.cache_bytes, self._cached_bytes = int(cache_bytes), 0
        self._cache: dict[int, Example] = {}
        fixed_mmap_threshold()  # flat peak memory whatever the corpus size
        # (location[, weight[, split]]) of each store
        stores: list[tuple[Any, ...]] = [
            (target,) if isinstance(target, str) else tuple(target) for target in targets
        ]
        self.locations = [str(store[0]) for store in stores]
        weights = [float(store[1]) if len(store) > 1 else 1.0 for store in stores]
        self.weights = np.array(weights, np.float32)
        self.splits = [
            str(store[2]) if len(store) > 2 and store[2] is not None else split for store in stores
        ]
        self.filters = [
            QualityFilter.from_dict(store[3] if len(store) > 3 else None) for store in stores
        ]
        self.quality_reports: list[dict[str, Any]] = []  # what each filter did
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
            for reader in self._readers:
                reader.check_labels(labels)
        self.hard_source = self._pick_hard(hard_labels)
        self.table = self._build_table(allow_partial)
        if self.world > 1 and len(self.table) < self.world:
            raise TrainingError(
                f"{len(self.table)} training utterances cannot be split across {self.world} "
                "ranks (each rank needs one at least); use fewer processes"
            )
        self.members = self.table.block_members()

    # -- opening and the index ----------------------------------------------------------
    def _open(self) -> None:
        self._pid = os.getpid()
        self._readers = [StoreReader(location) for location in self.locations]
        self._corpus = FeatureStore.open(self.corpus_location)

    def _pick_hard(self, choice: str) -> str:
        level = self.level
        in_store = all(level in reader.meta.hard_labels for reader in self._readers)
        if choice == "auto":
            return "corpus"  # every feature store carries labels of its task
        if choice == "store" and not in_store:
            raise ConfigError(f"hard_labels=store but a store has no {level}-level hard labels")
        return choice

    def _build_table(self, allow_partial: bool) -> ExampleTable:
        cols: dict[str, list[np.ndarray]] = {
            name: [] for name in ("src", "pos", "fidx", "win", "blk", "wt")
        }
        first_block = 0  # blocks are numbered across the stores, in store order
        for source, reader in enumerate(self._readers):
            pos, fidx = join_ids(reader, self._corpus, self.splits[source], allow_partial)
            keep, factors, report = self.filters[source].apply(reader.quality, pos, reader.location)
            pos, fidx, factors = pos[keep], fidx[keep], factors[keep]
            if report:
                self.quality_reports.append(report)
            win = crop_windows(reader, pos, self._corpus, fidx)
            if self.level == "frame":
                check_frame_counts(reader, pos, win, self.corpus_location)
            part_sizes = [part.num_utterances for part in reader.parts]
            frames = reader.num_frames  # (U,) teacher frames of each stored utterance
            if self.level != "frame":  # one row each: size blocks by the features they feed
                frames = np.zeros(len(reader.ids), dtype=np.int64)
                frames[pos] = win[:, 1] - win[:, 0]
            keys = block_ids(part_sizes, frames, self.block_frames)
            _, dense = np.unique(keys[pos], return_inverse=True)
            cols["src"].append(np.full(len(pos), source, dtype=np.int64))
            cols["pos"].append(pos)
            cols["fidx"].append(fidx)
            cols["win"].append(win)
            cols["blk"].append(dense.reshape(-1).astype(np.int64) + first_block)
            cols["wt"].append(self.weights[source] * factors)
            first_block += int(dense.max()) + 1
        return ExampleTable(
            source=np.concatenate(cols["src"]),
            pos=np.concatenate(cols["pos"]),
            fidx=np.concatenate(cols["fidx"]),
            window=np.concatenate(cols["win"]),
            block=np.concatenate(cols["blk"]),
            num_blocks=first_block,
            weight=np.concatenate(cols["wt"]).astype(np.float32),
        )

    # -- the plan -----------------------------------------------------------------------
    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        """Stream epoch ``epoch`` from its batch ``skip`` (batches of this rank)."""
        self.epoch, self.skip = int(epoch), int(skip)

    def _shard_plans(self, rank: int) -> list[list[np.ndarray]]:
        workers = max(1, self.num_workers)
        return [
            shard_plan(
                self.table,
                self.members,
                seed=self.seed,
                epoch=self.epoch,
                shard=rank * workers + worker,
                num_shards=self.world * workers,
                batch_frames=self.batch_frames,
                buffer_utts=self.buffer_utts,
                window_utts=self.window_utts,
            )
            for worker in range(workers)
        ]

    def num_batches(self) -> int:
        """Batches every rank runs this epoch (the smallest rank's count, so DDP ranks
        step together)."""
        per_rank = (self._shard_plans(rank) for rank in range(self.world))
        return min(sum(len(plan) for plan in plans) for plans in per_rank)

    def rank_order(self) -> list[np.ndarray]:
        """This rank's batches (example ids) of the epoch, in the order they are yielded."""
        plans = self._shard_plans(self.rank)
        order = interleave([len(plan) for plan in plans], self.num_batches())
        return [plans[worker][number] for worker, number in order]

    # -- iteration ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker = 0 if info is None else info.id
        if self._pid != os.getpid():
            self._open()  # a worker process: its own file handles and caches
        plans = self._shard_plans(self.rank)
        if info is None and len(plans) > 1:
            raise RuntimeError("TargetStream built for workers: iterate it via loader()")
        rest = interleave([len(plan) for plan in plans], self.num_batches())[self.skip :]
        # the DataLoader asks workers 0, 1, ... in turn: worker 0 plays the shard whose batch
        # comes next, so a resumed epoch continues in exactly the uninterrupted order
        role = (worker + (rest[0][0] if rest else 0)) % len(plans)
        yield from self._run(plans[role], [number for shard, number in rest if shard == role])

    def _run(self, plan: list[np.ndarray], todo: list[int]) -> Iterator[Batch]:
        """The batches ``todo`` of ``plan``: each block is read once, when a batch first
        needs one of its utterances, and the next block is read in a background thread
        while the caller trains on this one's batches (as ``StoreReader.blocks`` reads
        ahead); one thread does every read, so readers and caches are never shared."""
        if not todo:
            return
        cache = self._cache  # examples of earlier epochs, never read again
        needed = {int(ex) for number in todo for ex in plan[number] if int(ex) not in cache}
        schedule: list[list[int]] = []  # the examples of each block read, in reading order
        scheduled: set[int] = set()
        for number in todo:
            for block in dict.fromkeys(int(self.table.block[int(ex)]) for ex in plan[number]):
                if block not in scheduled:
                    scheduled.add(block)
                    members = [int(example) for example in self.members[block]]
                    wanted = [example for example in members if example in needed]
                    if wanted:
                        schedule.append(wanted)
        loaded: dict[int, Example] = {}
        self.peak_held = 0  # most examples held in memory at once (bounded; see epoch_order)
        with ThreadPoolExecutor(1, thread_name_prefix="kdpipe-stream-ahead") as ahead:
            reads = iter(schedule)
            pending: deque[Future[dict[int, Example]]] = deque()

            def read_next() -> None:
                examples = next(reads, None)
                if examples is not None:
                    pending.append(ahead.submit(self._load, examples))

            read_next()
            try:
                for number in todo:
                    batch = plan[number]
                    while any(int(ex) not in loaded and int(ex) not in cache for ex in batch):
                        got = pending.popleft().result()  # a read's error is raised here
                        read_next()  # the next block, while this one trains
                        for example, item in got.items():
                            if not self._keep(example, item):
                                loaded[example] = item
                        self.peak_held = max(self.peak_held, len(loaded))
                    examples = [cache[int(ex)] if int(ex) in cache else loaded.pop(int(ex))
                                for ex in batch]  # fmt: skip
                    yield self._collate(examples, batch)
            finally:
                for future in pending:
                    future.cancel()

    def _keep(self, example: int, item: Example) -> bool:
        """Cache ``item`` if it fits the budget (``cache_bytes``); whether it was."""
        size = sum(array.nbytes for array in vars(item).values() if array is not None)
        if self._cached_bytes + size > self.cache_bytes:
            return False
        self._cache[example] = item
        self._cached_bytes += size
        return True

    def _load(self, examples: list[int]) -> dict[int, Example]:
        """Read the targets of ``examples`` (one block: one store, one part) and their
        features; convert the targets to the student's rate."""
        table = self.table
        reader = self._readers[int(table.source[examples[0]])]
        block = reader.read([reader.ids[int(table.pos[example])] for example in examples])
        frame_level = self.level == "frame"
        rows = block.frame if frame_level else block.utt
        hard = block.hard_frame if frame_level else block.hard_utt
        assert rows is not None
        out: dict[int, Example] = {}
        # in corpus order, so that the features are read sequentially
        for position in np.argsort(table.fidx[examples], kind="stable"):  # place in the block
            example = examples[int(position)]
            start, stop = (int(frame) for frame in table.window[example])
            utt = int(table.fidx[example])
            x = self._corpus.features(utt)[start:stop]  # (T, F)
            if frame_level:
                first = int(block.frame_offsets[position])
                end = int(block.frame_offsets[position + 1])
                teacher_sub = int(block.subsampling[position])
                n_out = -(-(stop - start) // self.subsampling)
                raw = teacher_rows(n_out, self.subsampling, teacher_sub)  # (T',)
                valid = raw < end - first
                picked = first + np.minimum(raw, max(end - first - 1, 0))  # (T',) block rows
                if end > first:
                    idx, logp, tail = pad_rows(rows.slice_rows(first, end))
                    local = picked - first  # (T',) rows of this utterance
                    idx, logp, tail = idx[local], logp[local], tail[local]
                else:
                    idx, logp, tail = _empty(n_out)
                y = self._hard_frames(utt, start, stop, n_out, hard, picked, valid)
            else:
                idx, logp, tail = pad_rows(rows.slice_rows(int(position), int(position) + 1))
                valid = np.ones(1, dtype=bool)
                y = self._hard_clip(utt, hard, int(position))
            tokens = None if self.tokens is None else self.tokens.get(utt, _NO_TOKENS)
            out[example] = Example(np.array(x, np.float32), y, idx, logp, tail, valid, tokens)
        return out

    def _hard_frames(
        self,
        utt: int,
        start: int,
        stop: int,
        n_out: int,
        hard: np.ndarray | None,
        picked: np.ndarray,
        valid: np.ndarray,
    ) -> np.ndarray:
        """(T',) hard labels of corpus utterance ``utt`` cropped to [start, stop): the
        corpus's, or the store's block rows ``picked`` (``hard``), or none (IGNORE)."""
        if self.hard_source == "corpus":
            labels = self._corpus.frame_labels(utt)[start:stop]
            return subsample_labels(labels, self.subsampling, n_out)
        if self.hard_source == "store" and hard is not None:
            labels = hard[picked].astype(np.int64)
            none = np.iinfo(hard.dtype).max
            return np.where(valid & (labels != none), labels, IGNORE)
        return np.full(n_out, IGNORE, dtype=np.int64)

    def _hard_clip(self, utt: int, hard: np.ndarray | None, position: int) -> np.ndarray:
        """(1,) hard label of corpus utterance ``utt``: the corpus's, or the store's at
        ``position`` in the block (``hard``), or none (IGNORE)."""
        if self.hard_source == "corpus" and self._corpus.clip_labels is not None:
            return np.array([self._corpus.clip_labels[utt]], dtype=np.int64)
        if self.hard_source == "store" and hard is not None:
            label = int(hard[position])
            none = np.iinfo(hard.dtype).max
            return np.array([IGNORE if label == none else label], dtype=np.int64)
        return np.array([IGNORE], dtype=np.int64)

    def _collate(self, examples: list[Example], index: np.ndarray) -> Batch:
        x, lengths = pad_features([example.x for example in examples])  # (B, T, F), (B,)
        b = len(examples)
        t_out = max(len(example.y) for example in examples)
        k = max(example.idx.shape[1] for example in examples)
        y = torch.full((b, t_out), IGNORE, dtype=torch.int64)  # (B, T')
        idx = torch.zeros((b, t_out, k), dtype=torch.int64)  # (B, T', K)
        logp = torch.full((b, t_out, k), -torch.inf)  # (B, T', K)
        tail = torch.full((b, t_out), -torch.inf)  # (B, T')
        valid = torch.zeros((b, t_out), dtype=torch.bool)  # (B, T')
        for row, example in enumerate(examples):
            frames, width = len(example.y), example.idx.shape[1]
            y[row, :frames] = torch.from_numpy(example.y)
            idx[row, :frames, :width] = torch.from_numpy(example.idx)
            logp[row, :frames, :width] = torch.from_numpy(example.logp)
            tail[row, :frames] = torch.from_numpy(example.tail)
            valid[row, :frames] = torch.from_numpy(example.valid)
        if self.level != "frame":
            y = y[:, 0]  # (B,)
        weight = torch.from_numpy(self.table.weight[index])  # (B,)
        soft = SoftTargets(idx, logp, tail, valid, weight)
        tokens = None
        if self.tokens is not None:  # (B, L) IGNORE-padded; L = 0 when none has a transcript
            seqs = [_NO_TOKENS if ex.tokens is None else ex.tokens for ex in examples]
            tokens = torch.full((b, max(len(seq) for seq in seqs)), IGNORE, dtype=torch.int64)
            for row, seq in enumerate(seqs):
                tokens[row, : len(seq)] = torch.from_numpy(seq)
        return Batch(x, lengths, y, np.asarray(index), soft, tokens)

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
        table = self.table
        return [
            self._readers[int(table.source[example])].ids[int(table.pos[example])]
            for example in index
        ]


_NO_TOKENS = np.zeros(0, dtype=np.int64)  # an utterance without a transcript


def _empty(num_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(idx, logp, tail) of ``num_rows`` rows without a teacher target (as ``pad_rows``)."""
    return (
        np.zeros((num_rows, 1), np.int64),
        np.full((num_rows, 1), -np.inf, np.float32),
        np.full(num_rows, -np.inf, np.float32),
    )
