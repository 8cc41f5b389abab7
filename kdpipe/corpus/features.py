"""Log-mel filterbank features through kaldi-native-fbank (Kaldi-compatible).

Shapes: a waveform is (S,) float32 in [-1, 1] at ``sample_rate``; features are (T, F) with
F = ``num_mel_bins`` and T = ``num_frames(S)``.

Scaling: Kaldi computes features on int16-range samples. kaldi-native-fbank's
``accept_waveform`` takes floats as given and does not rescale, so ``compute_fbank`` multiplies
the [-1, 1] waveform by 32768 first (as sherpa-onnx and lhotse do). The log-mel values then
equal Kaldi's ``compute-fbank-feats`` on the same wav, and ``dither`` is in Kaldi's units
(standard deviation in int16 steps). Without the scaling every bin would be shifted by
-log(32768^2) ~ -20.8 and the log floor would bite on quiet audio.

CMVN: the feature store keeps raw features; ``apply_cmvn`` normalises on read, per utterance
(``"utterance"``) or with mean/std over the train split (``"global"``, see ``CmvnStats``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import kaldi_native_fbank as knf
import numpy as np

from kdpipe.schema import ConfigError, fingerprint, from_dict, to_dict

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

    def check_computable(self) -> None:
        """``ConfigError`` unless kaldi-native-fbank can compute these features from audio:
        3 to ``max_mel_bins`` mel bins for the window and sample rate (Kaldi's own rule, so
        prepare fails in one line before any work). Not part of construction: a config
        also records the dimension of features a corpus brought (Kaldi, lhotse, HDF5),
        which no window limits."""
        most = max_mel_bins(self.sample_rate, self.window_samples)
        if not 3 <= self.num_mel_bins <= most:
            raise ConfigError(
                f"features.num_mel_bins={self.num_mel_bins}: a {self.frame_length_ms:g} ms "
                f"window at {self.sample_rate} Hz gives 3 to {most} mel bins (each needs an "
                "FFT bin of its own); use fewer bins or a longer frame_length_ms"
            )

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


LOW_FREQ = 20.0  # Hz: Kaldi's (and kaldi-native-fbank's) default low edge of the mel bins


@functools.lru_cache(maxsize=64)  # fbank_options asks once per utterance
def max_mel_bins(sample_rate: int, window_samples: int) -> int:
    """The most mel bins Kaldi's ``MelBanks`` builds for a window (padded to a power of two)
    at ``sample_rate``: every bin must hold an FFT bin strictly inside it (0 when none)."""
    padded = 1 << max(0, int(window_samples - 1).bit_length())  # round_to_power_of_two
    freqs = np.arange(padded // 2) * (sample_rate / padded)  # (num_fft_bins,) Hz
    mel = 1127.0 * np.log(1.0 + freqs / 700.0)
    low = 1127.0 * np.log(1.0 + LOW_FREQ / 700.0)
    high = 1127.0 * np.log(1.0 + 0.5 * sample_rate / 700.0)
    best = 0
    for n in range(3, padded // 2 + 1):  # the first n with an empty bin ends the search
        delta = (high - low) / (n + 1)
        left = low + delta * np.arange(n)  # (n,) a bin spans (left, left + 2 delta)
        inside = (mel[None, :] > left[:, None]) & (mel[None, :] < left[:, None] + 2 * delta)
        if not inside.any(axis=1).all():
            break
        best = n
    return best


INT16_SCALE = 32768.0  # [-1, 1] floats -> Kaldi's int16 sample range
STD_FLOOR = 1e-5  # CMVN never divides by less (constant bins, one-frame utterances)


def set_frames(
    frame_opts: Any,
    sample_rate: int,
    frame_shift_ms: float,
    frame_length_ms: float,
    snip_edges: bool,
    dither: float,
) -> None:
    """Set kaldi-native-fbank ``FrameExtractionOptions`` (shared by fbank and MFCC, so that
    their frames line up)."""
    frame_opts.samp_freq = float(sample_rate)
    frame_opts.frame_shift_ms = float(frame_shift_ms)
    frame_opts.frame_length_ms = float(frame_length_ms)
    frame_opts.snip_edges = bool(snip_edges)
    frame_opts.dither = float(dither)


def fbank_options(cfg: FbankConfig) -> Any:
    """kaldi-native-fbank ``FbankOptions`` for ``cfg`` (Kaldi defaults for everything else);
    ``ConfigError`` for settings it cannot compute (``FbankConfig.check_computable``)."""
    cfg.check_computable()
    opts = knf.FbankOptions()
    set_frames(
        opts.frame_opts,
        cfg.sample_rate,
        cfg.frame_shift_ms,
        cfg.frame_length_ms,
        cfg.snip_edges,
        cfg.dither,
    )
    opts.mel_opts.num_bins = int(cfg.num_mel_bins)
    return opts


def compute_fbank(wave: np.ndarray, cfg: FbankConfig) -> np.ndarray:
    """Log-mel filterbank of a (S,) float32 waveform in [-1, 1]: (T, F) float32.

    T = ``cfg.num_frames(S)`` (0 for a clip shorter than one window with snip_edges); F =
    ``cfg.num_mel_bins``. Samples are scaled by 32768 first (see the module docstring).
    """
    wave = np.asarray(wave, dtype=np.float32)
    if wave.ndim != 1:
        raise ValueError(f"compute_fbank expects a (S,) waveform, got shape {wave.shape}")
    fb = knf.OnlineFbank(fbank_options(cfg))
    # a list converts ~15% faster than an ndarray through pybind11
    fb.accept_waveform(float(cfg.sample_rate), (wave * np.float32(INT16_SCALE)).tolist())
    fb.input_finished()
    n = fb.num_frames_ready
    out = np.empty((n, cfg.num_mel_bins), dtype=np.float32)  # (T, F)
    for i in range(n):
        out[i] = fb.get_frame(i)
    expected = cfg.num_frames(len(wave))
    if n != expected:  # a disagreement here is a kdpipe bug, not bad input
        raise RuntimeError(f"kaldi-native-fbank gave {n} frames, FbankConfig says {expected}")
    return out


def cmvn_utterance(feats: np.ndarray) -> np.ndarray:
    """Per-utterance mean/variance normalisation of (T, F) features: (T, F) float32."""
    if len(feats) == 0:
        return np.asarray(feats, dtype=np.float32)
    mean = feats.mean(axis=0, dtype=np.float64)  # (F,)
    std = np.maximum(feats.std(axis=0, dtype=np.float64), STD_FLOOR)  # (F,)
    return ((feats - mean) / std).astype(np.float32)


def apply_cmvn(
    feats: np.ndarray,
    mode: Cmvn,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
) -> np.ndarray:
    """Normalise (T, F) features: ``none``, ``utterance`` or ``global`` (needs (F,) mean/std)."""
    if mode == "none":
        return feats
    if mode == "utterance":
        return cmvn_utterance(feats)
    if mode == "global":
        if mean is None or std is None:
            raise ConfigError("global CMVN needs the train-split mean and std")
        return ((feats - mean) / np.maximum(std, STD_FLOOR)).astype(np.float32)
    raise ConfigError(f"cmvn must be none, utterance or global: {mode!r}")


class CmvnStats:
    """Running per-bin sums for global CMVN, accumulated in float64.

    ``add`` takes (T, F) features; ``mean``/``std`` are (F,) float32.
    """

    def __init__(self, dim: int) -> None:
        self.count = 0
        self.sum = np.zeros(dim, dtype=np.float64)  # (F,)
        self.sumsq = np.zeros(dim, dtype=np.float64)  # (F,)

    def add(self, feats: np.ndarray) -> None:
        x = np.asarray(feats, dtype=np.float64)  # (T, F)
        self.count += len(x)
        self.sum += x.sum(axis=0)
        self.sumsq += np.square(x).sum(axis=0)

    @classmethod
    def merged(cls, parts: list[CmvnStats]) -> CmvnStats:
        """One accumulator holding the sums of all ``parts``."""
        out = cls(len(parts[0].sum))
        for p in parts:
            out.count, out.sum, out.sumsq = (
                out.count + p.count,
                out.sum + p.sum,
                out.sumsq + p.sumsq,
            )
        return out

    @property
    def mean(self) -> np.ndarray:
        return (self.sum / max(self.count, 1)).astype(np.float32)

    @property
    def std(self) -> np.ndarray:
        n = max(self.count, 1)
        var = np.maximum(self.sumsq / n - np.square(self.sum / n), 0.0)
        return np.sqrt(var).astype(np.float32)
