"""Length-bucketed batching with padding.

Legend: B batch, T frames (longest in the batch), F features.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def bucket_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_frames: int,
    seed: int | None = None,
    bucket_size: int = 64,
) -> list[np.ndarray]:
    """Group utterance indices into batches of similar length.

    Each batch holds at most ``batch_frames`` padded frames (``B * T_max``), at least one
    utterance. With a ``seed`` the order within length buckets and the batch order are
    shuffled reproducibly; without one, batches come in length order (for evaluation).
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    if seed is None:
        order = np.argsort(lengths, kind="stable")
    else:
        rng = np.random.default_rng(seed)
        # sort by length with random tie-breaking, then shuffle inside windows of
        # ``bucket_size`` so batches differ between epochs but stay length-homogeneous
        order = np.lexsort((rng.random(len(lengths)), lengths))
        for s in range(0, len(order), bucket_size):
            rng.shuffle(order[s : s + bucket_size])
    batches: list[np.ndarray] = []
    start, longest = 0, 0
    for pos, i in enumerate(order):
        longest_if_added = max(longest, int(lengths[i]))
        if pos > start and longest_if_added * (pos - start + 1) > batch_frames:
            batches.append(order[start:pos])
            start, longest_if_added = pos, int(lengths[i])
        longest = longest_if_added
    if len(order) > start:
        batches.append(order[start:])
    if seed is not None:
        perm = np.random.default_rng(seed + 1).permutation(len(batches))
        batches = [batches[j] for j in perm]
    return batches


def pad_features(feats: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (T_i, F) arrays into x (B, T, F) zero-padded, and lengths (B,) int64."""
    lengths = torch.tensor([len(f) for f in feats], dtype=torch.int64)  # (B,)
    x = torch.zeros(len(feats), int(lengths.max()), feats[0].shape[1])  # (B, T, F)
    for b, f in enumerate(feats):
        x[b, : len(f)] = torch.from_numpy(np.ascontiguousarray(f, dtype=np.float32))
    return x, lengths


def pad_labels(labels: Sequence[np.ndarray], fill: int = -100) -> torch.Tensor:
    """Stack (T_i,) int arrays into (B, T) int64 padded with ``fill`` (ignored by the loss)."""
    out = torch.full((len(labels), max(len(y) for y in labels)), fill, dtype=torch.int64)
    for b, y in enumerate(labels):
        out[b, : len(y)] = torch.from_numpy(np.asarray(y, dtype=np.int64))
    return out


def subsample_labels(y: np.ndarray, factor: int, out_len: int) -> np.ndarray:
    """Frame labels (T,) at a model's output rate: the label of frame ``i * factor``.

    A model that subsamples by ``factor`` emits ``out_len`` frames; its frame ``j`` sees
    input frames around ``j * factor``, so it is trained on that frame's label.
    """
    if factor == 1:
        return y[:out_len]
    idx = np.minimum(np.arange(out_len) * factor, len(y) - 1)
    return y[idx]
