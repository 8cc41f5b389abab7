"""Time-delay neural network (``tdnn``): dilated 1-D convolutions over time, frame level.

Layer i is a 1-D convolution with kernel ``kernel_sizes[i]`` and dilation ``dilations[i]``
(Kaldi's splicing offsets {-d, 0, d} for kernel 3), then ReLU, norm and dropout. With
``subsampling`` s > 1, every s-th frame is kept after the first layer, so the later layers
run at the lower frame rate (their dilations count output frames) and output frame j
lines up with input frame j * s.

Padded frames are zeroed before every convolution, so an utterance sees the same zeros
past its end whether it is alone or padded in a batch.

Shapes: B batch, T frames, F features, H hidden channels, C classes, s subsampling,
T' = ceil(T / s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from kdpipe.errors import ConfigError
from kdpipe.models.base import ModelConfig
from kdpipe.models.layers import (
    FrameNorm,
    Norm,
    lengths_to_mask,
    mask_frames,
    subsample_lengths,
)


@dataclass(frozen=True)
class TdnnConfig(ModelConfig):
    """Size and context of a TDNN; total context is sum((k - 1) * d) frames (x s later on)."""

    model_name: ClassVar[str] = "tdnn"

    hidden_dim: int = 256  # a mid-size student; Kaldi teachers use 512-1536
    kernel_sizes: tuple[int, ...] = (5, 3, 3, 3, 3)  # odd sizes, centred; 5 layers
    dilations: tuple[int, ...] = (1, 1, 2, 3, 3)  # Kaldi-like {-1,0,1} then {-3,0,3}: +-11 frames
    dropout: float = 0.1  # light: soft KD targets already regularise
    norm: Norm = "batch"  # Kaldi's relu-batchnorm; statistics over real frames only
    subsampling: int = 1  # one posterior per frame; 3 is Kaldi's chain-model rate

    def __post_init__(self) -> None:
        self._int("hidden_dim", 1)
        self._int_tuple("kernel_sizes", 1)
        self._int_tuple("dilations", 1)
        self._dropout()
        self._choice("norm", ("batch", "layer", "none"))
        self._int("subsampling", 1)
        if len(self.kernel_sizes) != len(self.dilations):
            raise ConfigError(
                f"tdnn config: kernel_sizes ({len(self.kernel_sizes)} layers) and dilations "
                f"({len(self.dilations)} layers) must have the same length"
            )
        if any(k % 2 == 0 for k in self.kernel_sizes):
            raise ConfigError(f"tdnn config: kernel_sizes must be odd, got {self.kernel_sizes}")


class Tdnn(nn.Module):
    """Frame-level TDNN: (B, T, F) features -> (B, T', C) logits."""

    level: ClassVar[str] = "frame"

    def __init__(self, num_features: int, num_classes: int, config: TdnnConfig | None = None):
        super().__init__()
        self.config = cfg = config or TdnnConfig()
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleList()
        for i, (k, d) in enumerate(zip(cfg.kernel_sizes, cfg.dilations, strict=True)):
            in_dim = num_features if i == 0 else cfg.hidden_dim
            self.convs.append(
                nn.Conv1d(in_dim, cfg.hidden_dim, k, dilation=d, padding=d * (k - 1) // 2)
            )
            self.norms.append(FrameNorm(cfg.norm, cfg.hidden_dim))
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_dim, num_classes)

    @property
    def subsampling(self) -> int:
        return self.config.subsampling

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, T', C), out_lengths (B,)."""
        s = self.config.subsampling
        lengths = lengths.to(x.device)
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        h = mask_frames(x, mask)  # (B, T, F): padding zeroed before the first conv
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            h = torch.relu(conv(h.transpose(1, 2)).transpose(1, 2))  # (B, T, H)
            h = self.dropout(norm(h, mask))  # (B, T, H), zeros on padding
            if i == 0 and s > 1:
                h = h[:, ::s]  # (B, T', H): later layers run at the lower rate
                lengths = subsample_lengths(lengths, s)  # (B,)
                mask = lengths_to_mask(lengths, h.shape[1])  # (B, T')
        return mask_frames(self.output(h), mask), lengths  # (B, T', C), (B,)
