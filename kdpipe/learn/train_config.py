"""The training config: a frozen dataclass built from YAML or CLI options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.precision import check_precision
from kdpipe.schema import from_dict, to_dict, without_defaults


@dataclass(frozen=True)
class TrainConfig:
    """How to train; every default is what the small synthetic corpora train well with."""

    epochs: int = 20  # small corpora converge in 10-30 epochs; early stopping trims the rest
    lr: float = 2e-3  # AdamW peak rate for small (<1M param) acoustic models
    weight_decay: float = 1e-2  # AdamW's usual regulariser; matters with little data
    warmup_epochs: float = 1.0  # linear warm-up keeps early LSTM updates stable
    min_lr_ratio: float = 0.05  # cosine decay floor, as a fraction of ``lr``
    batch_frames: int = 4000  # padded frames per batch: ~40 clips; small corpora need many steps
    grad_clip: float = 5.0  # max global grad norm; LSTMs occasionally spike
    patience: int = 5  # epochs without dev improvement before stopping (0 = never stop)
    seed: int = 0  # seeds init, batch order, dropout and SpecAugment
    spec_augment: bool = False  # off by default: a baseline should be the plain recipe
    freq_masks: int = 2  # SpecAugment (Park et al. 2019) LibriSpeech-basic setting
    freq_mask_width: int = 8  # out of 40 mel bins
    time_masks: int = 2
    time_mask_width: int = 10  # frames (100 ms)
    label_smoothing: float = 0.0  # hard-label CE smoothing; 0 keeps baselines plain
    device: str = "auto"  # cuda when present, else cpu
    num_threads: int = 0  # torch intra-op threads; 0 = torch's default
    save_every: int = 0  # steps between mid-epoch states for --resume; 0 = epoch ends only
    precision: str = "fp32"  # fp32: exact and portable; bf16: autocast on a GPU (kdpipe.precision)

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"train: {msg}")

        need(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        need(self.lr > 0, f"lr must be > 0, got {self.lr}")
        need(self.weight_decay >= 0, "weight_decay must be >= 0")
        need(self.warmup_epochs >= 0, "warmup_epochs must be >= 0")
        need(0 <= self.min_lr_ratio <= 1, "min_lr_ratio must be in [0, 1]")
        need(self.batch_frames >= 1, "batch_frames must be >= 1")
        need(self.grad_clip >= 0, "grad_clip must be >= 0 (0 = off)")
        need(self.patience >= 0, "patience must be >= 0")
        need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        need(self.num_threads >= 0, "num_threads must be >= 0")
        need(self.save_every >= 0, "save_every must be >= 0 (0 = at epoch ends only)")
        check_precision(self.precision, "train")
        for name in ("freq_masks", "freq_mask_width", "time_masks", "time_mask_width"):
            need(getattr(self, name) >= 0, f"{name} must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        """The settings; ``precision`` only when not fp32, so that the cards and recipe
        fingerprints of runs made before it existed stay the same."""
        return without_defaults(to_dict(self), self, ("precision",))

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> TrainConfig:
        return from_dict(cls, data, "train")
