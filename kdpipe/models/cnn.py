"""Keyword CNN (``cnn``): small 2-D convolutions over (time, frequency), utterance level.

In the spirit of the Speech Commands baselines: blocks of 3x3 convolution -> ReLU ->
norm -> max-pool, then pooling over all time (real frames only) and frequency, then one
linear layer. Only ``channels`` sets the size: ``(8, 16, 16)`` is a ~4k-parameter model,
``(32, 64, 128, 128)`` a ~240k one, with the same code.

Time is padded internally to a multiple of the total time pooling and padded frames are
zeroed after every block, so a clip alone and padded in a batch give the same logits.

Shapes: B batch, T frames, F features (mel bins), Ch channels, C classes; a feature map is
(B, Ch, T, F), channels-last (B, T, F, Ch) for the norm.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as nnf
from torch import nn

from kdpipe.errors import ConfigError
from kdpipe.models.base import ModelConfig
from kdpipe.models.layers import (
    FrameNorm,
    Norm,
    lengths_to_mask,
    mask_frames,
    masked_pool,
    subsample_lengths,
)


@dataclass(frozen=True)
class CnnConfig(ModelConfig):
    """Size of the keyword CNN: one conv block per entry of ``channels``."""

    model_name: ClassVar[str] = "cnn"

    channels: tuple[int, ...] = (16, 32, 64)  # ~25k parameters: between tiny and compact KWS
    kernel_size: int = 3  # 3x3 (odd: centred), as the compact Speech Commands CNNs (res8)
    time_pool: int = 2  # halve the frame rate per block (1 s -> 13 frames after 3 blocks)
    freq_pool: int = 2  # halve the mel bins per block (40 -> 5 after 3 blocks)
    dropout: float = 0.1  # before the classifier; light, KD targets regularise
    norm: Norm = "batch"  # batch norm over real frames only, as in res8
    pooling: Literal["mean", "max"] = "mean"  # global pooling; mean is the common choice

    def __post_init__(self) -> None:
        self._int_tuple("channels", 1)
        self._int("kernel_size", 1)
        self._int("time_pool", 1)
        self._int("freq_pool", 1)
        self._dropout()
        self._choice("norm", ("batch", "layer", "none"))
        self._choice("pooling", ("mean", "max"))
        if self.kernel_size % 2 == 0:
            raise ConfigError(f"cnn config: kernel_size must be odd, got {self.kernel_size}")


class Cnn(nn.Module):
    """Utterance-level CNN: (B, T, F) features -> (B, C) logits, one per clip."""

    level: ClassVar[str] = "utt"
    subsampling: ClassVar[int] = 1

    def __init__(self, num_features: int, num_classes: int, config: CnnConfig | None = None):
        super().__init__()
        self.config = cfg = config or CnnConfig()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        in_ch = 1
        for ch in cfg.channels:
            self.convs.append(nn.Conv2d(in_ch, ch, cfg.kernel_size, padding="same"))
            self.norms.append(FrameNorm(cfg.norm, ch))
            in_ch = ch
        self.pool = nn.MaxPool2d((cfg.time_pool, cfg.freq_pool))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(in_ch, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, C), out_lengths (B,) of ones."""
        cfg = self.config
        out_lengths = torch.ones_like(lengths, device=x.device)  # (B,)
        lengths = lengths.to(x.device)
        n = len(cfg.channels)
        t_mult, f_mult = cfg.time_pool**n, cfg.freq_pool**n
        t_pad = -x.shape[1] % t_mult
        f_pad = -x.shape[2] % f_mult
        h = nnf.pad(x, (0, f_pad, 0, t_pad))  # (B, T, F) padded to pool multiples
        mask = lengths_to_mask(lengths, h.shape[1])  # (B, T)
        h = mask_frames(h, mask)[:, None]  # (B, 1, T, F)
        for conv, norm in zip(self.convs, self.norms, strict=True):
            h = torch.relu(conv(h))  # (B, Ch, T, F)
            h = norm(h.permute(0, 2, 3, 1), mask).permute(0, 3, 1, 2)  # (B, Ch, T, F)
            h = self.pool(h)  # (B, Ch, T / tp, F / fp); windows past the end hold zeros
            lengths = subsample_lengths(lengths, cfg.time_pool)  # (B,)
            mask = lengths_to_mask(lengths, h.shape[2])  # (B, T / tp)
            h = mask_frames(h.transpose(1, 2), mask).transpose(1, 2)  # (B, Ch, T, F)
        if cfg.pooling == "max":
            per_frame = h.amax(dim=3).transpose(1, 2)  # (B, T, Ch)
        else:
            per_frame = h.mean(dim=3).transpose(1, 2)  # (B, T, Ch)
        pooled = masked_pool(per_frame, mask, cfg.pooling)  # (B, Ch)
        return self.output(self.dropout(pooled)), out_lengths  # (B, C), (B,)
