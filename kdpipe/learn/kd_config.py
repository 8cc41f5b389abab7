"""The distillation config (``kd:`` in a training YAML, ``-k KEY=VALUE`` on the CLI)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdpipe.errors import ConfigError
from kdpipe.learn.alpha_schedule import SCHEDULES, alpha_at
from kdpipe.losses import TAIL_RULES
from kdpipe.schema import from_dict, to_dict

HARD_SOURCES = ("auto", "corpus", "store", "none")
CTC_FRAMES = ("all", "spikes")


@dataclass(frozen=True)
class KdConfig:
    """How to distil from a target store; every default with its reason."""

    temperature: float = 1.0  # stored log-probs are at T=1; T>1 only helps sharp teachers
    tail: str = "renorm"  # see docs/learn.md: renorm trained as well or better on our tests
    schedule: str = "constant"  # constant alpha; "anneal" and "pretrain" are opt-in
    alpha: float = 1.0  # teacher targets only (Li et al. 2014): works for unlabelled data too
    alpha_end: float = 0.0  # anneal: the weight of the teacher in the last epoch
    soft_epochs: int = 0  # pretrain: epochs of soft-only training before hard fine-tuning
    hard_labels: str = "auto"  # corpus alignments when there are any, else the store's
    block_frames: int = 1 << 18  # frames per sequential store read: ~6 MB decoded at k=8
    buffer_utts: int = 512  # shuffle buffer: enough to mix ~4 blocks of short utterances
    window_utts: int = 128  # utterances sorted together into length-homogeneous batches
    workers: int = 0  # DataLoader worker processes per rank (0: read in the training process)
    # examples kept in memory across epochs (cropped features + targets at the student's
    # rate): a split that fits is read once, as in-memory training holds all of it; 0: off
    cache_mb: int = 512
    allow_partial: bool = False  # a store covering part of the split is an error by default
    verify: bool = True  # checksum the whole store before the first step (it is read anyway)
    # CTC students (docs/ctc.md): "all" frames in the KL, or only the teacher's "spikes",
    # frames where its blank probability is below ``blank_max`` (Kurata and Audhkhasi 2019:
    # frame KL between CTC models suffers where their spikes fall on different frames)
    ctc_frames: str = "all"
    blank_max: float = 0.5  # spikes: a frame whose teacher blank mass reaches this is left out

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(f"kd: {msg}")

        need(self.temperature > 0, f"temperature must be > 0, got {self.temperature}")
        need(self.tail in TAIL_RULES, f"tail must be one of {', '.join(TAIL_RULES)}")
        need(self.schedule in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}")
        need(0 <= self.alpha <= 1 and 0 <= self.alpha_end <= 1, "alpha must be in [0, 1]")
        need(self.soft_epochs >= 0, "soft_epochs must be >= 0")
        need(self.hard_labels in HARD_SOURCES, f"hard_labels: one of {', '.join(HARD_SOURCES)}")
        for name in ("block_frames", "buffer_utts", "window_utts"):
            need(getattr(self, name) >= 1, f"{name} must be >= 1")
        need(self.workers >= 0, "workers must be >= 0")
        need(self.cache_mb >= 0, "cache_mb must be >= 0 (0: no cache)")
        need(self.ctc_frames in CTC_FRAMES, f"ctc_frames: one of {', '.join(CTC_FRAMES)}")
        need(0 < self.blank_max <= 1, f"blank_max must be in (0, 1], got {self.blank_max}")

    def alpha_at(self, epoch: int, epochs: int) -> float:
        """The teacher weight of 0-based ``epoch`` (``alpha_schedule.alpha_at``)."""
        return alpha_at(epoch, epochs, self.schedule, self.alpha, self.alpha_end, self.soft_epochs)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> KdConfig:
        return from_dict(cls, data, "kd")
