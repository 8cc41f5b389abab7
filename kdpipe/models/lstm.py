"""Recurrent models: ``lstm`` and ``blstm`` (frame level), ``lstm_pool`` (utterance level).

Sequences are packed (``pack_padded_sequence``), so the recurrence never runs over padded
frames: a BLSTM's backward pass starts at each utterance's own last frame, and an
utterance alone or padded in a batch gives the same outputs.

Shapes: B batch, T frames, F features, H hidden units per direction, D directions
(1 or 2), C classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kdpipe.models.base import ModelConfig
from kdpipe.models.layers import lengths_to_mask, masked_pool


@dataclass(frozen=True)
class LstmConfig(ModelConfig):
    """Size of a (uni-directional) LSTM acoustic model."""

    model_name: ClassVar[str] = "lstm"

    hidden_dim: int = 256  # per direction; large teachers use 512-1024
    num_layers: int = 3  # 3 stacked layers: the usual LSTM acoustic model depth
    dropout: float = 0.1  # between layers and before the output; light, KD regularises

    def __post_init__(self) -> None:
        self._int("hidden_dim", 1)
        self._int("num_layers", 1)
        self._dropout()


@dataclass(frozen=True)
class BlstmConfig(LstmConfig):
    """Size of a bidirectional LSTM (the classic KD teacher); same fields as ``lstm``."""

    model_name: ClassVar[str] = "blstm"


def run_lstm(lstm: nn.LSTM, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Run ``lstm`` on real frames only. x: (B, T, F), lengths: (B,) -> (B, T, D*H)."""
    packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
    out, _ = lstm(packed)
    padded, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
    return padded  # (B, T, D*H), zeros on padded frames


def make_lstm(num_features: int, cfg: LstmConfig, bidirectional: bool) -> nn.LSTM:
    return nn.LSTM(
        num_features,
        cfg.hidden_dim,
        cfg.num_layers,
        batch_first=True,
        dropout=cfg.dropout if cfg.num_layers > 1 else 0.0,  # torch warns on 1 layer
        bidirectional=bidirectional,
    )


class Lstm(nn.Module):
    """Frame-level LSTM: (B, T, F) features -> (B, T, C) logits."""

    level: ClassVar[str] = "frame"
    subsampling: ClassVar[int] = 1
    bidirectional: ClassVar[bool] = False

    def __init__(self, num_features: int, num_classes: int, config: LstmConfig | None = None):
        super().__init__()
        self.config = cfg = config or LstmConfig()
        self.lstm = make_lstm(num_features, cfg, self.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_dim * (2 if self.bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, T, C), out_lengths (B,)."""
        lengths = lengths.to(x.device)
        hidden = run_lstm(self.lstm, x, lengths)  # (B, T, D*H)
        mask = lengths_to_mask(lengths, x.shape[1])[..., None]  # (B, T, 1)
        logits = self.output(self.dropout(hidden)) * mask  # (B, T, C), zero on padding
        return logits, lengths


class Blstm(Lstm):
    """Frame-level bidirectional LSTM: (B, T, F) -> (B, T, C); sees the whole utterance."""

    bidirectional: ClassVar[bool] = True

    def __init__(self, num_features: int, num_classes: int, config: LstmConfig | None = None):
        super().__init__(num_features, num_classes, config or BlstmConfig())


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

    level: ClassVar[str] = "utterance"
    subsampling: ClassVar[int] = 1

    def __init__(self, num_features: int, num_classes: int, config: LstmPoolConfig | None = None):
        super().__init__()
        self.config = cfg = config or LstmPoolConfig()
        lstm_cfg = LstmConfig(cfg.hidden_dim, cfg.num_layers, cfg.dropout)
        self.lstm = make_lstm(num_features, lstm_cfg, cfg.bidirectional)
        self.dropout = nn.Dropout(cfg.dropout)
        self.output = nn.Linear(cfg.hidden_dim * (2 if cfg.bidirectional else 1), num_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, F), lengths: (B,) -> logits (B, C), out_lengths (B,) of ones."""
        lengths = lengths.to(x.device)
        hidden = run_lstm(self.lstm, x, lengths)  # (B, T, D*H)
        mask = lengths_to_mask(lengths, x.shape[1])  # (B, T)
        pooled = masked_pool(hidden, mask, self.config.pooling)  # (B, D*H)
        return self.output(self.dropout(pooled)), torch.ones_like(lengths)  # (B, C), (B,)
