"""Length-bucketed batching, padding and label subsampling."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from kdpipe.batching import bucket_batches, pad_features, pad_labels, subsample_labels
from kdpipe.learn.lr_schedule import lr_at
from kdpipe.losses import IGNORE, align_frame_labels


def test_batches_cover_every_utterance_once_within_budget():
    lengths = np.random.default_rng(0).integers(5, 300, size=500)
    for seed in (None, 1, 2):
        batches = bucket_batches(lengths, batch_frames=2000, seed=seed)
        flat = np.concatenate(batches)
        assert sorted(flat.tolist()) == list(range(500))
        for b in batches:
            assert len(b) == 1 or lengths[b].max() * len(b) <= 2000


def test_batches_are_reproducible_and_differ_by_seed():
    lengths = np.arange(1, 200)
    a = bucket_batches(lengths, 500, seed=3)
    b = bucket_batches(lengths, 500, seed=3)
    c = bucket_batches(lengths, 500, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=False))


def test_padding_and_labels():
    x, lengths = pad_features([np.ones((3, 2), np.float32), np.ones((1, 2), np.float32)])
    assert x.shape == (2, 3, 2) and lengths.tolist() == [3, 1]
    assert float(x[1, 1:].abs().sum()) == 0.0
    y = pad_labels([np.array([1, 2, 3]), np.array([4])])
    assert y.tolist() == [[1, 2, 3], [4, IGNORE, IGNORE]]


def test_subsampled_labels_follow_output_frames():
    y = torch.tensor([[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, IGNORE, IGNORE, IGNORE, IGNORE]])
    out = align_frame_labels(y, 3, torch.tensor([3, 1]), 3)
    assert out.tolist() == [[0, 3, 6], [7, IGNORE, IGNORE]]
    assert subsample_labels(np.arange(7), 3, 3).tolist() == [0, 3, 6]


def test_lr_schedule_warms_up_then_decays_to_floor():
    lrs = [lr_at(p / 10, 1.0, 10, 1, 0.1) for p in range(0, 101)]
    assert lrs[0] < 0.01 and abs(max(lrs) - 1.0) < 0.02
    assert abs(lrs[-1] - 0.1) < 1e-6
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(lrs[10:]))
