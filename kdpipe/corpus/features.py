"""Log-mel filterbank features through kaldi-native-fbank (Kaldi-compatible).

Shapes: a waveform is (S,) float32 in [-1, 1] at ``sample_rate``; features are (T, F) with
F = ``num_mel_bins`` and T = ``num_frames(S)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from kdpipe.config import ConfigError, fingerprint, from_dict, to_dict

Cmvn = Literal["none", "utterance", "global"]


@dataclass(frozen=True)
class FbankConfig:
    """Filterbank settings; every stage that reads features must agree with these."""

    sample_rate: int = 16000  # Speech Commands and most ASR corpora
    frame_shift_ms: float = 10.0  # Kaldi default; alignments are one label per shift
    frame_length_ms: float = 25.0  # Kaldi default window
    num_mel_bins: int = 40  # hybrid-ASR papers of the period (Tang, Chan) used 40
    snip_edges: bool = True  # Kaldi default: T = 1 + (S - window) // shift
    dither: float = 0.0  # 0 keeps features deterministic (Kaldi's default is 1.0)
    cmvn: Cmvn = "utterance"  # per-utterance mean/variance norm: robust to unseen voices

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"features.sample_rate must be positive, got {self.sample_rate}")
        if not 0 < self.frame_shift_ms <= self.frame_length_ms:
            raise ConfigError("features: need 0 < frame_shift_ms <= frame_length_ms")
        if self.num_mel_bins < 1:
            raise ConfigError(f"features.num_mel_bins must be >= 1, got {self.num_mel_bins}")
        if self.cmvn not in ("none", "utterance", "global"):
            raise ConfigError(f"features.cmvn must be none, utterance or global: {self.cmvn!r}")
        if self.dither < 0:
            raise ConfigError("features.dither must be >= 0")

    @property
    def shift_samples(self) -> int:
        return round(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.frame_length_ms / 1000)

    def num_frames(self, num_samples: int) -> int:
        """Frames kaldi-native-fbank gives for ``num_samples`` samples (Kaldi's rule)."""
        shift, window = self.shift_samples, self.window_samples
        if self.snip_edges:
            return 0 if num_samples < window else 1 + (num_samples - window) // shift
        return (num_samples + shift // 2) // shift

    def frame_center(self, frame: int) -> float:
        """Centre of frame ``frame`` in seconds (used to label frames from phone timings)."""
        shift, window = self.shift_samples, self.window_samples
        if self.snip_edges:
            return (frame * shift + window / 2) / self.sample_rate
        return (frame * shift + shift / 2) / self.sample_rate

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> FbankConfig:
        return from_dict(cls, d, "features")

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.to_dict())
