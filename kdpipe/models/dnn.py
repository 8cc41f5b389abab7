"""Feed-forward DNNs on spliced frames: ``dnn`` (frame level) and ``dnn_pool`` (utterance).

The hybrid-ASR DNN of the KD papers: each frame is stacked with its neighbours (a context
window), then ReLU hidden layers run on every real frame. ``dnn_pool`` averages (or maxes)
the last hidden layer over real frames and classifies the clip.

Shapes: B batch, T frames, F features, K = left + 1 + right context frames, H hidden
units, C classes, N real frames in the batch, s subsampling factor, T' = ceil(T / s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from kdpipe.models.base import ModelConfig
from kdpipe.models.layers import (
    Norm,
    frame_mlp,
    lengths_to_mask,
    masked_pool,
    scatter_frames,
    splice,
    subsample_lengths,
)


class _SplicedMlpConfig(ModelConfig):
    """What both DNN configs have: a context window and per-frame layers (no fields here:
    each config declares its own, with its own defaults)."""

    def _check_spliced_mlp(self) -> None:
        """Check hidden_dim, num_layers, left/right_context, dropout and norm."""
        self._int("hidden_dim", 1)
        self._int("num_layers", 1)
        self._int("left_context", 0)
        self._int("right_context", 0)
        self._dropout()
        self._choice("norm", ("batch", "layer", "none"))


@dataclass(frozen=True)
class DnnConfig(_SplicedMlpConfig):
    """Size of a frame-level DNN; a small student and a big teacher differ only here."""

    model_name: ClassVar[str] = "dnn"

    hidden_dim: int = 512  # a mid-size student; teachers use 1024-2048
    num_layers: int = 3  # 3 hidden layers: enough depth for a student, cheap on CPU
    left_context: int = 5  # +-5 frames (110 ms window), the classic hybrid DNN input
    right_context: int = 5  # symmetric; lower it for a low-latency streaming student
    dropout: float = 0.1  # light: soft KD targets already regularise
    norm: Norm = "batch"  # Kaldi's relu-batchnorm; statistics over real frames only
    subsampling: int = 1  # one posterior per input frame; 2-3 for low-frame-rate models

    def __post_init__(self) -> None:
        self._check_spliced_mlp()
        self._int("subsampling", 1)


def _spliced_mlp(num_features: int, cfg: DnnConfig | DnnPoolConfig) -> nn.Sequential:
    """The per-frame layers of both DNNs: (N, K*F) spliced real frames -> (N, H)."""
    context = cfg.left_context + 1 + cfg.right_context  # K
    return frame_mlp(context * num_features, cfg.hidden_dim, cfg.num_layers, cfg.norm, cfg.dropout)


class Dnn(nn.Module):
    """Frame-level DNN: (B, T, F) features -> (B, T', C) logits, one per s-th frame."""

    level: ClassVar[str] = "frame"

    def __init__(self, num_features: int, num_classes: int, config: DnnConfig | None = None):
        super().__init__()
        self.config = cfg = config or DnnConfig()
        self.mlp = _spliced_mlp(num_features, cfg)
        self.output = nn.Linear(cfg.hidden_dim, num_classes)

    @property
    def subsampling(self) -> int:
        return self.config.subsampling

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, T', C), out_lengths (B,)."""
        cfg = self.config
        lengths = lengths.to(x.device)
        windows = splice(x, lengths, cfg.left_context, cfg.right_context, cfg.subsampling)
        out_lengths = subsample_lengths(lengths, cfg.subsampling)  # (B,)
        mask = lengths_to_mask(out_lengths, windows.shape[1])  # (B, T')
        hidden = self.mlp(windows[mask])  # (N, H): real frames only
        return scatter_frames(self.output(hidden), mask), out_lengths  # (B, T', C), (B,)


@dataclass(frozen=True)
class DnnPoolConfig(_SplicedMlpConfig):
    """Size of an utterance-level DNN: per-frame layers, then pooling over time."""

    model_name: ClassVar[str] = "dnn_pool"

    hidden_dim: int = 256  # keyword clips are short and the label space small
    num_layers: int = 3  # as the frame DNN: enough depth for a student
    left_context: int = 5  # +-5 frames gives each frame a syllable-sized view
    right_context: int = 5  # the whole clip is seen before deciding: no latency limit
    dropout: float = 0.1  # light: soft KD targets already regularise
    norm: Norm = "batch"  # relu-batchnorm, statistics over real frames only
    pooling: Literal["mean", "max"] = "mean"  # mean is stable; max suits short keywords

    def __post_init__(self) -> None:
        self._check_spliced_mlp()
        self._choice("pooling", ("mean", "max"))


class DnnPool(nn.Module):
    """Utterance-level DNN: (B, T, F) features -> (B, C) logits, one per clip."""

    level: ClassVar[str] = "utt"
    subsampling: ClassVar[int] = 1

    def __init__(self, num_features: int, num_classes: int, config: DnnPoolConfig | None = None):
        super().__init__()
        self.config = cfg = config or DnnPoolConfig()
        self.mlp = _spliced_mlp(num_features, cfg)
        self.output = nn.Linear(cfg.hidden_dim, num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, C), out_lengths (B,) of ones."""
        cfg = self.config
        lengths = lengths.to(x.device)
        windows = splice(x, lengths, cfg.left_context, cfg.right_context)  # (B, T, K*F)
        mask = lengths_to_mask(lengths, windows.shape[1])  # (B, T)
        hidden = scatter_frames(self.mlp(windows[mask]), mask)  # (B, T, H)
        pooled = masked_pool(hidden, mask, cfg.pooling)  # (B, H)
        return self.output(pooled), torch.ones_like(lengths)  # (B, C), (B,)
