"""Padding-safe building blocks shared by the model zoo.

Every helper keeps one rule: a padded frame never changes a real frame's output. Padded
positions are zeroed after each layer, context windows are cut at each utterance's own
end, and statistics (batch norm, pooling) are taken over real frames only.

Shapes: B batch, T frames, F features, H hidden units, K context frames.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

Norm = Literal["batch", "layer", "none"]


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, T) bool mask, True on real frames."""
    steps = torch.arange(max_len, device=lengths.device)  # (T,)
    return steps[None, :] < lengths[:, None]  # (B, T)


def subsample_lengths(lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Lengths after keeping every ``factor``-th frame, starting at frame 0: ceil(L / s)."""
    return torch.div(lengths + factor - 1, factor, rounding_mode="floor")  # (B,)


def splice(
    x: torch.Tensor, lengths: torch.Tensor, left: int, right: int, step: int = 1
) -> torch.Tensor:
    """Stack frames 0, step, 2*step... with ``left`` frames before and ``right`` after.

    Kaldi-style splicing: frames past an utterance's own edges repeat its first/last real
    frame, so an utterance spliced alone and inside a padded batch gives the same windows.

    x: (B, T, F), lengths: (B,) -> (B, T', K * F) with K = left + 1 + right,
    T' = ceil(T / step).
    """
    b, _, f = x.shape
    centres = torch.arange(0, x.shape[1], step, device=x.device)  # (T',)
    offsets = torch.arange(-left, right + 1, device=x.device)  # (K,)
    idx = (centres[:, None] + offsets[None, :]).clamp(min=0)  # (T', K)
    last = (lengths.to(x.device) - 1).clamp(min=0)[:, None, None]  # (B, 1, 1)
    idx = torch.minimum(idx[None], last).reshape(b, -1)  # (B, T' * K)
    gathered = torch.gather(x, 1, idx[..., None].expand(-1, -1, f))  # (B, T' * K, F)
    return gathered.reshape(b, centres.numel(), offsets.numel() * f)  # (B, T', K*F)


def masked_pool(x: torch.Tensor, mask: torch.Tensor, how: Literal["mean", "max"]) -> torch.Tensor:
    """Mean or max over real frames only. x: (B, T, H), mask: (B, T) -> (B, H)."""
    m = mask[..., None]  # (B, T, 1)
    if how == "max":
        return x.masked_fill(~m, float("-inf")).amax(dim=1)  # (B, H)
    count = m.sum(dim=1).clamp(min=1).to(x.dtype)  # (B, 1)
    return (x * m).sum(dim=1) / count  # (B, H)


class FrameNorm(nn.Module):
    """Per-frame normalisation of (B, T, H) that ignores padded frames.

    ``batch``: BatchNorm statistics over the real frames of the batch only (padded frames
    are gathered out first). ``layer``: LayerNorm per frame. ``none``: identity. Padded
    frames come out as zeros.
    """

    def __init__(self, kind: Norm, dim: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "batch":
            self.norm: nn.Module = nn.BatchNorm1d(dim)
        elif kind == "layer":
            self.norm = nn.LayerNorm(dim)
        else:
            self.norm = nn.Identity()

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H) or (B, T, F', H) channels-last, mask: (B, T) -> same shape as x."""
        if self.kind != "batch":
            return self.norm(x) * _expand(mask, x)
        real = x[mask]  # (N, H) or (N, F', H): real frames only
        flat = self.norm(real.reshape(-1, real.shape[-1]))  # (N * F', H)
        out = x.new_zeros(x.shape)
        out[mask] = flat.reshape(real.shape)
        return out


def _expand(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B, T) mask -> broadcastable to ``like`` (B, T, ...), as ``like``'s dtype."""
    return mask.reshape(mask.shape + (1,) * (like.dim() - 2)).to(like.dtype)


def mask_frames(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero padded frames. x: (B, T, ...), mask: (B, T) -> same shape as x."""
    return x * _expand(mask, x)


def frame_mlp(in_dim: int, hidden: int, layers: int, norm: Norm, dropout: float) -> nn.Sequential:
    """``layers`` blocks of Linear -> ReLU -> norm -> dropout on packed real frames.

    Input (N, D) holds only real frames (``x[mask]``), so batch norm never sees padding.
    (N, D) -> (N, H).
    """
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks.append(nn.Linear(in_dim if i == 0 else hidden, hidden))
        blocks.append(nn.ReLU())
        if norm == "batch":
            blocks.append(nn.BatchNorm1d(hidden))
        elif norm == "layer":
            blocks.append(nn.LayerNorm(hidden))
        blocks.append(nn.Dropout(dropout))
    return nn.Sequential(*blocks)


def scatter_frames(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Put packed real frames back in a zero-padded batch. (N, H), (B, T) -> (B, T, H)."""
    out = packed.new_zeros((*mask.shape, packed.shape[-1]))  # (B, T, H)
    out[mask] = packed
    return out
