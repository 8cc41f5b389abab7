"""The order of a streamed epoch, computed from the index alone (no data is read).

Examples (an utterance of one store of a mix) live in **blocks**: runs of consecutive
utterances of one store part, about ``block_frames`` teacher frames each, read with one
sequential request. An epoch of one **shard** (a DataLoader worker of a DDP rank) is:

1. the blocks in a seeded random order, their examples one after the other, cut into
   ``num_shards`` contiguous runs of equal length (to one example): the shard's run. Every
   shard gets its share of examples whatever the blocks and parts (the single block of a
   small one-part store included) and reads whole blocks, but for its first and last,
   which it may share with the shards beside it; the cuts move each epoch (a seeded
   rotation of the sequence);
2. their examples pushed through a bounded shuffle buffer (``buffer_utts``): once full,
   each new example evicts a random one (seeded), the rest drain in random order at the end;
3. the buffer's output cut into windows of ``window_utts`` examples, each sorted by length
   and cut into batches of at most ``batch_frames`` padded frames, batch order shuffled
   within the window.

The plan is a pure function of (seed, epoch, shard), so every rank can compute every
rank's plan (equal step counts under DDP), and a resumed run can skip the batches already
done without reading them. Memory while streaming is bounded by one block plus the buffer
plus one window of examples, whatever the corpus size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdpipe.batching import bucket_batches


@dataclass(frozen=True)
class ExampleTable:
    """E examples in store order (sources one after the other) and their B blocks."""

    source: np.ndarray  # (E,) int64 which store of the mix
    pos: np.ndarray  # (E,) int64 position in that store's ``ids``
    fidx: np.ndarray  # (E,) int64 utterance index in the corpus
    window: np.ndarray  # (E, 2) int64 [start, stop) input frames (crop)
    block: np.ndarray  # (E,) int64 block of each example, blocks numbered in store order
    num_blocks: int
    weight: np.ndarray  # (E,) float32 loss weight: its store's, times its quality factor

    @property
    def lengths(self) -> np.ndarray:
        """(E,) input frames each example feeds the student (after the crop)."""
        return self.window[:, 1] - self.window[:, 0]

    def __len__(self) -> int:
        return len(self.pos)

    def block_members(self) -> list[np.ndarray]:
        """Example ids of each block, in store order."""
        order = np.argsort(self.block, kind="stable")
        cuts = np.flatnonzero(np.diff(self.block[order])) + 1
        return np.split(order, cuts)


def block_ids(part_sizes: list[int], frames: np.ndarray, block_frames: int) -> np.ndarray:
    """(U,) block key of each utterance of one store, in store order: blocks never cross a
    part and hold about ``block_frames`` frames. Keys are increasing, not consecutive."""
    keys = np.zeros(len(frames), dtype=np.int64)
    start, key = 0, 0
    for size in part_sizes:
        part_frames = frames[start : start + size]  # (size,)
        before = np.concatenate([[0], np.cumsum(part_frames)[:-1]]) if size else part_frames
        local = before // max(1, block_frames)
        keys[start : start + size] = key + local
        key += int(local[-1]) + 1 if size else 0
        start += size
    return keys


def shard_examples(
    members: list[np.ndarray],
    num_blocks: int,
    *,
    seed: int,
    epoch: int,
    shard: int,
    num_shards: int,
) -> np.ndarray:
    """Example ids of one shard for one epoch, before the shuffle buffer: the blocks in a
    seeded order (the same for every shard), their examples concatenated, rotated by a
    seeded offset and cut into ``num_shards`` contiguous runs whose lengths differ by at
    most one. One shard: the whole epoch, block after block, unrotated."""
    order = np.random.default_rng([seed, epoch, 17]).permutation(num_blocks)
    epoch_examples = (
        np.concatenate([members[block] for block in order]) if num_blocks else np.zeros(0, np.int64)
    )
    total = len(epoch_examples)
    if num_shards > 1 and total:  # the cuts move each epoch, inside a block too: a shard
        # never sees the same share twice, even of a single block
        start = int(np.random.default_rng([seed, epoch, 43]).integers(total))
        epoch_examples = np.roll(epoch_examples, -start)
    return epoch_examples[total * shard // num_shards : total * (shard + 1) // num_shards]


def shard_plan(
    table: ExampleTable,
    members: list[np.ndarray],
    *,
    seed: int,
    epoch: int,
    shard: int,
    num_shards: int,
    batch_frames: int,
    buffer_utts: int,
    window_utts: int,
) -> list[np.ndarray]:
    """The batches (arrays of example ids) of one shard for one epoch, in order."""
    mine = shard_examples(
        members, table.num_blocks, seed=seed, epoch=epoch, shard=shard, num_shards=num_shards
    )
    rng = np.random.default_rng([seed, epoch, 29, shard])
    buf: list[int] = []
    out: list[int] = []
    for example in mine.tolist():
        buf.append(example)
        if len(buf) > buffer_utts:
            evict = int(rng.integers(len(buf)))
            buf[evict], buf[-1] = buf[-1], buf[evict]
            out.append(buf.pop())
    out.extend(np.array(buf, dtype=np.int64)[rng.permutation(len(buf))].tolist())
    lengths = table.lengths
    batches: list[np.ndarray] = []
    flat = np.array(out, dtype=np.int64)
    for start in range(0, len(flat), window_utts):
        window = flat[start : start + window_utts]
        cut = bucket_batches(lengths[window], batch_frames)  # length order, no shuffle
        for batch in rng.permutation(len(cut)):
            batches.append(window[cut[batch]])
    return batches


def interleave(counts: list[int], steps: int) -> list[tuple[int, int]]:
    """(worker, its batch number) of the first ``steps`` batches a DataLoader yields from
    workers producing ``counts`` batches each: round robin, skipping exhausted workers (the
    order of ``torch.utils.data.DataLoader`` with an ``IterableDataset``)."""
    out: list[tuple[int, int]] = []
    done = [0] * len(counts)
    while len(out) < steps and any(made < count for made, count in zip(done, counts, strict=True)):
        for worker, count in enumerate(counts):
            if done[worker] < count and len(out) < steps:
                out.append((worker, done[worker]))
                done[worker] += 1
    return out
