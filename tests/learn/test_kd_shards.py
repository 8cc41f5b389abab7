"""DDP ranks and DataLoader workers share a streamed epoch equally, whatever the store's
parts and blocks: a one-part store (what ``teach`` writes for a small corpus) included."""

from __future__ import annotations

import pytest
import torch

from kdpipe.errors import TrainingError
from kdpipe.learn.stream import TargetStream
from kdpipe.store import StoreReader
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store

torch.set_num_threads(1)
UTTS = 30


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """A frame corpus and a clip corpus of ``UTTS`` train utterances, and their stores:
    frame-level in one part and in parts of ~300 frames, utterance-level in one part."""
    d = tmp_path_factory.mktemp("shards")
    frames = make_feature_store(d / "f.zarr", per_split={"train": UTTS, "dev": 2},
                                num_mel_bins=4, frames=(10, 40))  # fmt: skip
    clips = make_feature_store(d / "c.zarr", task="clip", per_split={"train": UTTS, "dev": 2},
                               num_mel_bins=4, frames=(10, 40))  # fmt: skip
    return {
        "frame": (frames, corpus_store(d / "f1.zarr", frames, part_frames=1 << 20)),
        "frame-parts": (frames, corpus_store(d / "fp.zarr", frames, part_frames=300)),
        "utt": (clips, corpus_store(d / "u1.zarr", clips, level="utt", part_frames=1 << 20)),
    }


def make(stores, name, **kw):
    corpus, store = stores[name]
    level = "utt" if name == "utt" else "frame"
    opts = {"batch_frames": 100, "seed": 3, "buffer_utts": 6, "window_utts": 8, **kw}
    return TargetStream([store], corpus.location, "train", level=level, **opts)


@pytest.mark.parametrize(
    ("name", "block_frames", "workers"),
    [
        ("frame", 1 << 18, 0),  # one part, one block: every rank had nothing to read
        ("utt", 1 << 18, 0),
        ("utt", 1 << 18, 2),  # and 4 shards (2 ranks x 2 workers) of that one block
        ("frame-parts", 250, 0),  # a few blocks: one rank had twice the other's utterances
    ],
)
def test_ranks_get_equal_disjoint_shares(stores, name, block_frames, workers):
    ranks = [make(stores, name, block_frames=block_frames, num_workers=workers, rank=rank,
                  world=2) for rank in (0, 1)]  # fmt: skip
    if name != "frame-parts":
        assert len(StoreReader(stores[name][1]).parts) == 1 and ranks[0].table.num_blocks == 1
    plans = [stream.rank_order() for stream in ranks]
    steps = ranks[0].num_batches()
    assert steps > 0 and [len(plan) for plan in plans] == [steps, steps]  # DDP: same steps
    shares = [{int(e) for batch in plan for e in batch} for plan in plans]
    assert not shares[0] & shares[1]
    # each rank planned half of the epoch (its steps may leave out a short batch or two
    # past the smallest rank's count)
    per_rank = [sum(len(batch) for plan in stream._shard_plans(stream.rank) for batch in plan)
                for stream in ranks]  # fmt: skip
    assert per_rank == [UTTS // 2, UTTS // 2]
    if workers == 0:  # the batches streamed are the plan, read from the store
        for stream, plan in zip(ranks, plans, strict=True):
            assert [b.index.tolist() for b in stream] == [p.tolist() for p in plan]
            stream.set_epoch(0, skip=1)  # a resumed epoch continues where it stopped
            assert [b.index.tolist() for b in stream] == [p.tolist() for p in plan[1:]]


def test_shares_are_seeded_and_move_each_epoch(stores):
    rank0 = make(stores, "utt", rank=0, world=2, block_frames=250)
    again = make(stores, "utt", rank=0, world=2, block_frames=250)
    halves = []
    for epoch in (0, 1):
        rank0.set_epoch(epoch)
        again.set_epoch(epoch)
        plan = [batch.tolist() for batch in rank0.rank_order()]
        assert plan == [batch.tolist() for batch in again.rank_order()]  # same seed, same plan
        halves.append({e for batch in plan for e in batch})
    assert halves[0] != halves[1]  # rank 0 does not see the same half every epoch


def test_fewer_utterances_than_ranks_is_one_clear_error(stores):
    with pytest.raises(TrainingError, match=f"{UTTS} training utterances cannot be split across"):
        make(stores, "utt", rank=0, world=UTTS + 1)


def test_utterance_level_blocks_are_sized_by_their_features(stores):
    """Utterance rows have no teacher frames: a one-part store used to be one block, read
    (features and all) at once, whatever the corpus size."""
    stream = make(stores, "utt", block_frames=100)
    list(stream)
    per_block = max(len(m) for m in stream.members)
    assert stream.table.num_blocks > 3 and stream.peak_held <= 6 + 8 + per_block < UTTS
