"""Recurrent models: ``lstm`` and ``blstm`` (frame level), ``lstm_pool`` (utterance level).

Padding never reaches a real frame: the forward direction runs over the padded batch
(padding comes after every real frame, so it cannot affect them), and the backward
direction runs over each utterance reversed *within its own length*, so it too meets
padding only after all real frames. An utterance alone or padded in a batch gives the
same outputs. We do not use ``pack_padded_sequence``: on CPU its backward pass is 30-60x
slower than the padded one for batches of mixed lengths (measured with torch 2.13).

Output subsampling (``subsampling: s``, for CTC models at 40 ms and other low frame rates)
is frame stacking in front of the first layer (Sak et al. 2015, "Fast and accurate
recurrent neural network acoustic models for speech recognition": 8 stacked frames, every
third kept): each group of s consecutive input frames becomes one input vector of s*F, so
the LSTM runs s times fewer steps. Frames past an utterance's end are zeroed before
stacking, so its last, partial group holds the same values alone or padded in a batch.

Shapes: B batch, T frames, F features, H hidden units per direction, D directions
(1 or 2), C classes, s subsampling, T' = ceil(T / s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from kdpipe.errors import ConfigError
from kdpipe.models.base import ModelConfig
from kdpipe.models.layers import lengths_to_mask, masked_pool, subsample_lengths


@dataclass(frozen=True)
class LstmConfig(ModelConfig):
    """Size of a (uni-directional) LSTM acoustic model."""

    model_name: ClassVar[str] = "lstm"

    hidden_dim: int = 256  # per direction; large teachers use 512-1024
    num_layers: int = 3  # 3 stacked layers: the usual LSTM acoustic model depth
    dropout: float = 0.1  # between layers and before the output; light, KD regularises
    delay: int = 0  # lstm: frames of look-ahead (output t after reading t + delay); Sak et al.
    # 2014 delay LSTM targets by 5 frames. 0 keeps the plain, causal model. Counted in
    # output frames (s input frames each when subsampling).
    subsampling: int = 1  # one output per input frame; 4 stacks frames to 40 ms (CTC models)

    def __post_init__(self) -> None:
        self._int("hidden_dim", 1)
        self._int("num_layers", 1)
        self._dropout()
        self._int("delay", 0)
        self._int("subsampling", 1)


@dataclass(frozen=True)
class BlstmConfig(LstmConfig):
    """Size of a bidirectional LSTM (the classic KD teacher); same fields as ``lstm``."""

    model_name: ClassVar[str] = "blstm"


def stack_frames(x: torch.Tensor, lengths: torch.Tensor, factor: int) -> torch.Tensor:
    """Stack each group of ``factor`` consecutive frames into one: (B, T, F) -> (B, T', s*F).

    Frames at or past each utterance's length are zeroed first (and T is padded with zeros
    to a multiple of s), so a partial last group is the same alone or in a padded batch.
    """
    if factor == 1:
        return x
    b, t, f = x.shape
    keep = lengths_to_mask(lengths, t)[..., None].to(x.dtype)  # (B, T, 1)
    groups = -(-t // factor)  # T'
    x = nn.functional.pad(x * keep, (0, 0, 0, groups * factor - t))  # (B, T' * s, F)
    return x.reshape(b, groups, factor * f)  # (B, T', s*F)


def reverse_padded(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its length; padding stays put. (B, T, H) -> (B, T, H)."""
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    last = lengths[:, None] - 1  # (B, 1)
    idx = torch.where(t <= last, last - t, t)  # (B, T)
    return x.gather(1, idx[..., None].expand_as(x))


class MaskedLSTM(nn.Module):
    """Stacked (B)LSTM over padded batches: (B, T, F), lengths (B,) -> (B, T, D*H).

    One single-layer ``nn.LSTM`` per layer and direction; outputs are zero on padding.
    """

    def __init__(self, num_features: int, cfg: LstmConfig, bidirectional: bool) -> None:
        super().__init__()
        self.bidirectional = bidirectional
        dirs = 2 if bidirectional else 1
        sizes = [num_features] + [cfg.hidden_dim * dirs] * (cfg.num_layers - 1)
        self.forward_layers = nn.ModuleList(
            nn.LSTM(n, cfg.hidden_dim, batch_first=True) for n in sizes
        )
        self.backward_layers = nn.ModuleList(
            nn.LSTM(n, cfg.hidden_dim, batch_first=True) for n in (sizes if bidirectional else [])
        )
        self.dropout = nn.Dropout(cfg.dropout)  # between layers

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        mask = lengths_to_mask(lengths, x.shape[1])[..., None].to(x.dtype)  # (B, T, 1)
        for i, fwd in enumerate(self.forward_layers):
            if i > 0:
                x = self.dropout(x)
            out, _ = fwd(x)  # (B, T, H)
            if self.bidirectional:
                back, _ = self.backward_layers[i](reverse_padded(x, lengths))  # (B, T, H)
                out = torch.cat([out, reverse_padded(back, lengths)], dim=-1)  # (B, T, 2H)
            x = out * mask  # zero on padding
        return x


class Lstm(nn.Module):
    """Frame-level LSTM: (B, T, F) features -> (B, T, C) logits."""

    level: ClassVar[str] = "frame"
    bidirectional: ClassVar[bool] = False

    def __init__(self, num_features: int, num_classes: int, config: LstmConfig | None = None):
        super().__init__()
        self.config = cfg = config or LstmConfig()
        self.lstm = MaskedLSTM(num_features * cfg.subsampling, cfg, self.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_dim * (2 if self.bidirectional else 1), num_classes)

    @property
    def subsampling(self) -> int:
        return self.config.subsampling

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, T', C), out_lengths (B,)."""
        lengths = lengths.to(x.device)
        s = self.config.subsampling
        x = stack_frames(x, lengths, s)  # (B, T', s*F)
        lengths = subsample_lengths(lengths, s)  # (B,) ceil(L / s)
        d = self.config.delay
        if d:  # read d zero frames past each utterance's end, drop the first d outputs
            keep = lengths_to_mask(lengths, x.shape[1])[..., None].to(x.dtype)  # (B, T, 1)
            x_late = nn.functional.pad(x * keep, (0, 0, 0, d))  # (B, T + d, F), zeros after
            hidden = self.lstm(x_late, lengths + d)[:, d:]  # (B, T, H): t sees up to t + d
        else:
            hidden = self.lstm(x, lengths)  # (B, T', D*H)
        mask = lengths_to_mask(lengths, x.shape[1])[..., None]  # (B, T', 1)
        logits = self.output(self.dropout(hidden)) * mask  # (B, T', C), zero on padding
        return logits, lengths


class Blstm(Lstm):
    """Frame-level bidirectional LSTM: (B, T, F) -> (B, T, C); sees the whole utterance."""

    bidirectional: ClassVar[bool] = True

    def __init__(self, num_features: int, num_classes: int, config: LstmConfig | None = None):
        cfg = config or BlstmConfig()
        if cfg.delay:
            raise ConfigError("blstm config: delay must be 0 (a BLSTM already sees the future)")
        super().__init__(num_features, num_classes, cfg)


@dataclass(frozen=True)
class LstmPoolConfig(ModelConfig):
    """Size of an utterance-level LSTM: recurrent layers, then pooling over time."""

    model_name: ClassVar[str] = "lstm_pool"

    hidden_dim: int = 128  # per direction; keyword clips are short, classes few
    num_layers: int = 2  # 2 layers suffice for one-second clips
    dropout: float = 0.1  # light: soft KD targets already regularise
    bidirectional: bool = True  # the whole clip is seen before deciding, so look both ways
    pooling: Literal["mean", "max"] = "mean"  # mean is stable; max suits short keywords

    def __post_init__(self) -> None:
        self._int("hidden_dim", 1)
        self._int("num_layers", 1)
        self._dropout()
        self._bool("bidirectional")
        self._choice("pooling", ("mean", "max"))


class LstmPool(nn.Module):
    """Utterance-level LSTM: (B, T, F) features -> (B, C) logits, one per clip."""

    level: ClassVar[str] = "utt"
    subsampling: ClassVar[int] = 1

    def __init__(self, num_features: int, num_classes: int, config: LstmPoolConfig | None = None):
        super().__init__()
        self.config = cfg = config or LstmPoolConfig()
        lstm_cfg = LstmConfig(cfg.hidden_dim, cfg.num_layers, cfg.dropout)  # no subsampling
        self.lstm = MaskedLSTM(num_features, lstm_cfg, cfg.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_dim * (2 if cfg.bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, C), out_lengths (B,) of ones."""
        lengths = lengths.to(x.device)
        hidden = self.lstm(x, lengths)  # (B, T, D*H)
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        pooled = masked_pool(hidden, mask, self.config.pooling)  # (B, D*H)
        return self.output(self.dropout(pooled)), torch.ones_like(lengths)  # (B, C), (B,)
