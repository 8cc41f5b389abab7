"""SpecAugment-style masking (Park et al. 2019), on padded batches. Legend: B, T, F."""

from __future__ import annotations

import torch


def spec_augment(
    x: torch.Tensor,
    lengths: torch.Tensor,
    freq_masks: int,
    freq_width: int,
    time_masks: int,
    time_width: int,
) -> torch.Tensor:
    """Zero random frequency bands and time spans of ``x`` (B, T, F); draws from torch's RNG."""
    x = x.clone()
    B, _, F = x.shape
    for b in range(B):
        for _ in range(freq_masks):
            w = int(torch.randint(0, freq_width + 1, ()))
            f0 = int(torch.randint(0, max(1, F - w + 1), ()))
            x[b, :, f0 : f0 + w] = 0.0
        T = int(lengths[b])
        for _ in range(time_masks):
            w = min(int(torch.randint(0, time_width + 1, ())), T)
            t0 = int(torch.randint(0, max(1, T - w + 1), ()))
            x[b, t0 : t0 + w, :] = 0.0
    return x
