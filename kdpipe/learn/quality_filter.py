"""Picking utterances by the teacher's quality on them (the store's ``index/quality``).

A ``targets`` entry may carry thresholds (docs/learn.md, "Teacher quality"):

    targets: [{path: t.zarr, min_agreement: 0.6, max_entropy: 2.5, below: drop}]

An utterance is **below** when its teacher agreement with the hard labels is under
``min_agreement`` or its mean entropy (nats) is over ``max_entropy``. ``below: drop``
(default) leaves it out of training; a number in [0, 1) multiplies its loss weight
instead (down-weighting, as SpeechBrain weights teachers; distil-whisper drops pseudo
labels by WER). An utterance whose quality is unknown (NaN: no hard labels for the
agreement, or a store written before format 3) is never below: it is counted as
``unknown`` in the report, so a threshold that judges nothing is visible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.errors import ConfigError

KEYS = ("min_agreement", "max_entropy", "below")


@dataclass(frozen=True)
class QualityFilter:
    """Thresholds on one store's per-utterance teacher quality; None: no threshold."""

    min_agreement: float | None = None  # drop utterances the teacher gets less right
    max_entropy: float | None = None  # drop utterances the teacher is this unsure about
    below: str | float = "drop"  # "drop", or the loss-weight factor of what is below

    def __post_init__(self) -> None:
        for name in ("min_agreement", "max_entropy"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            ):
                raise ConfigError(f"targets: {name} must be a number, got {value!r}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"targets: min_agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_entropy is not None and self.max_entropy < 0:
            raise ConfigError(f"targets: max_entropy must be >= 0, got {self.max_entropy}")
        below = self.below
        if below != "drop" and (
            isinstance(below, bool) or not isinstance(below, (int, float)) or not 0 <= below < 1
        ):
            raise ConfigError(f"targets: below must be 'drop' or a weight in [0, 1), got {below!r}")

    @property
    def active(self) -> bool:
        return self.min_agreement is not None or self.max_entropy is not None

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> QualityFilter:
        return cls(**{key: value for key, value in (data or {}).items() if key in KEYS})

    def to_dict(self) -> dict[str, Any]:
        """Only what is set (a run's identity is unchanged by an absent filter)."""
        data: dict[str, Any] = {}
        if self.min_agreement is not None:
            data["min_agreement"] = self.min_agreement
        if self.max_entropy is not None:
            data["max_entropy"] = self.max_entropy
        if self.active and self.below != "drop":
            data["below"] = self.below
        return data

    def judge(self, quality: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """(below (U,) bool, unknown (U,) bool) for a store's quality columns (U,) each."""
        agreement, entropy = quality["agreement"], quality["entropy"]
        below = np.zeros(len(agreement), dtype=bool)
        unknown = np.zeros(len(agreement), dtype=bool)
        if self.min_agreement is not None:
            below |= agreement < self.min_agreement  # NaN compares False: never below
            unknown |= np.isnan(agreement)
        if self.max_entropy is not None:
            below |= entropy > self.max_entropy
            unknown |= np.isnan(entropy)
        return below, unknown

    def apply(
        self, quality: dict[str, np.ndarray], positions: np.ndarray, where: str
    ) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
        """(keep (N,) bool, weight factors (N,) float32, report) for store ``positions``."""
        factors = np.ones(len(positions), dtype=np.float32)
        keep = np.ones(len(positions), dtype=bool)
        if not self.active:
            return keep, factors, {}
        below, unknown = self.judge({name: col[positions] for name, col in quality.items()})
        report = {
            "store": where,
            **self.to_dict(),
            "utterances": len(positions),
            "below": int(below.sum()),
            "unknown": int(unknown.sum()),
            "action": "drop" if self.below == "drop" else f"weight x {self.below}",
        }
        if self.below == "drop":
            if below.all():
                raise ConfigError(
                    f"{where}: the quality thresholds {self.to_dict()} drop all "
                    f"{len(positions)} utterances"
                )
            return ~below, factors, report
        factors[below] = float(self.below)
        return keep, factors, report


def quality_line(report: dict[str, Any]) -> str:
    """One line of the run log for a filter's report."""
    rules = ", ".join(
        f"{name} {report[name]}" for name in ("min_agreement", "max_entropy") if name in report
    )
    return (
        f"teacher quality {report['store']}: {report['below']} of {report['utterances']} "
        f"utterances below ({rules}) -> {report['action']}; {report['unknown']} unknown"
    )
