"""``TargetStream``: coverage, reproducible order, ranks and workers, crops, rate
conversion, mixing, bounded memory, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.essence import Rule
from kdpipe.learn.epoch_order import interleave
from kdpipe.learn.stream import TargetStream
from kdpipe.store import StoreReader
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("st")
    fs = make_feature_store(d / "f.zarr", per_split={"train": 40, "dev": 2}, num_mel_bins=4,
                            frames=(10, 40))  # fmt: skip
    windows = {"train-u3": (4, 20), "train-u7": (0, 9)}
    a = corpus_store(d / "a.zarr", fs, windows=windows, part_frames=300)
    b = corpus_store(d / "b.zarr", fs, rule=Rule("threshold", {"p_min": 0.1}), seed=5,
                     subsampling=2)  # fmt: skip
    return {"fs": fs, "a": a, "b": b, "windows": windows}


def stream(data, targets=None, **kw):
    opts = {"batch_frames": 120, "seed": 3, "block_frames": 100, "buffer_utts": 6,
            "window_utts": 8, **kw}  # fmt: skip
    return TargetStream(targets or [data["a"]], data["fs"].location, "train", **opts)


def ids_of(batches):
    return [b.index.tolist() for b in batches]


def test_epoch_covers_everything_once_in_a_seeded_order(data):
    s = stream(data)
    first = ids_of(s)
    flat = sorted(e for b in first for e in b)
    assert flat == list(range(40))
    assert ids_of(stream(data)) == first  # same seed, same epoch: same order
    s.set_epoch(1)
    assert ids_of(s) != first
    for b in s:
        assert b.x.shape[0] * b.x.shape[1] <= 120 or b.x.shape[0] == 1


def test_bounded_memory(data):
    s = stream(data)
    list(s)
    per_block = max(len(m) for m in s.members)
    assert s.peak_held <= 6 + 8 + per_block < 40


@pytest.mark.parametrize("budget", [10**9, 20_000])  # everything, or part of the epoch
def test_the_example_cache_changes_no_batch_and_reads_once(data, monkeypatch, budget):
    """With cache_bytes, epochs 2 and 3 yield exactly the batches of a stream without a
    cache (values too), reading the store only for what the cache could not hold."""
    plain, cached = stream(data), stream(data, cache_bytes=budget)
    reads = []
    real = cached._load
    monkeypatch.setattr(
        cached, "_load", lambda examples: reads.append(len(examples)) or real(examples)
    )
    for epoch in range(3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for a, b in zip(plain, cached, strict=True):
            assert a.index.tolist() == b.index.tolist()
            torch.testing.assert_close(a.x, b.x)
            torch.testing.assert_close(a.targets.logp, b.targets.logp)
            assert torch.equal(a.targets.idx, b.targets.idx) and torch.equal(a.y, b.y)
    if budget == 10**9:
        assert sum(reads) == 40  # every utterance read once, in the first epoch
    else:
        assert 40 < sum(reads) < 3 * 40  # what did not fit is read again each epoch
    assert cached._cached_bytes <= budget


def test_ranks_split_without_overlap(data):
    r0, r1 = (stream(data, rank=r, world=2) for r in (0, 1))
    a, b = ids_of(r0), ids_of(r1)
    assert len(a) == len(b) == r0.num_batches() > 0
    sa, sb = {e for x in a for e in x}, {e for x in b for e in x}
    assert not sa & sb and len(sa | sb) >= 30


def test_workers_follow_the_plan_and_resume(data):
    s = stream(data, num_workers=2)
    plan = [x.tolist() for x in s.rank_order()]
    assert ids_of(s.loader()) == plan
    for skip in (3, 4, len(plan) - 1):  # after either worker, and near the end
        s.set_epoch(0, skip=skip)
        assert ids_of(s.loader()) == plan[skip:]


def test_interleave_is_dataloader_order():
    assert interleave([3, 1, 2], 6) == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]
    assert interleave([3, 1, 2], 4) == [(0, 0), (1, 0), (2, 0), (0, 1)]


def test_crop_windows_and_targets(data):
    fs, r = data["fs"], StoreReader(data["a"])
    for batch in stream(data):
        for i, e in enumerate(batch.index):
            u = r.ids[int(e)]
            a, b = data["windows"].get(u, (0, int(fs.num_frames[fs.index_of(u)])))
            n = int(batch.lengths[i])
            assert n == b - a
            assert torch.equal(batch.x[i, :n], torch.from_numpy(fs.features(fs.index_of(u))[a:b]))
            one = r.get(u).frame
            assert batch.targets.idx[i, :n].tolist() == one.indices.astype(int).tolist()
            got = batch.targets.logp[i, :n].numpy()
            assert np.allclose(got, one.logprobs())
            assert bool(batch.targets.valid[i, :n].all()) and not batch.targets.valid[i, n:].any()


def test_teacher_subsampling_converted_and_variable_width(data):
    """Store b: teacher at half the frame rate, threshold rule (variable width)."""
    r = StoreReader(data["b"])
    for batch in stream(data, [data["b"]]):
        i = 0
        u = r.ids[int(batch.index[i])]
        one = r.get(u).frame
        n = int(batch.lengths[i])  # student subsampling 1: every input frame
        rows = np.arange(n) // 2  # teacher row of each student frame
        first = batch.targets.idx[i, :n, 0].numpy()
        assert np.array_equal(first, one.top1()[rows])
        widths = torch.isfinite(batch.targets.logp[i, :n]).sum(-1).numpy()
        assert np.array_equal(widths, one.widths()[rows])  # variable width, -inf padded
        assert batch.targets.logp.shape[-1] == max(
            int(r.get(r.ids[int(e)]).frame.widths().max()) for e in batch.index
        )


def test_student_subsampling_takes_every_other_row(data):
    r = StoreReader(data["a"])
    batch = next(iter(stream(data, subsampling=2)))
    u = r.ids[int(batch.index[0])]
    n_out = -(-int(batch.lengths[0]) // 2)
    assert batch.targets.idx.shape[1] >= n_out
    want = r.get(u).frame.top1()[::2][:n_out]
    assert batch.targets.idx[0, :n_out, 0].tolist() == want.tolist()


def test_mixing_two_stores_with_weights(data):
    s = stream(data, [(data["a"], 1.0), (data["b"], 0.5)])
    seen = {}
    for batch in s:
        for e, w in zip(batch.index.tolist(), batch.targets.weight.tolist(), strict=True):
            seen[e] = w
    assert len(seen) == 80
    assert sorted(set(seen.values())) == [0.5, 1.0]
    assert sum(1 for w in seen.values() if w == 0.5) == 40


def test_mixing_in_another_split(data, tmp_path):
    """An 'unlabelled' set: a store over another split, mixed in with its own weight."""
    extra = corpus_store(tmp_path / "dev.zarr", data["fs"], splits=("dev",))
    s = stream(data, [(data["a"], 1.0), (extra, 0.3, "dev")])
    seen = {e: w for b in s for e, w in zip(b.index.tolist(), b.targets.weight.tolist(),
                                            strict=True)}  # fmt: skip
    assert len(seen) == 42 and sum(1 for w in seen.values() if abs(w - 0.3) < 1e-6) == 2
    assert {s.describe([e])[0] for e, w in seen.items() if w < 1} == {"dev-u0", "dev-u1"}
