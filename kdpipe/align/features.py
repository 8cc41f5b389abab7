"""Alignment features: MFCC + deltas + delta-deltas with per-speaker mean normalisation.

What Kaldi's GMM recipes train on (``compute-mfcc-feats`` with ``conf/mfcc.conf``,
``apply-cmvn`` per speaker, ``add-deltas``), computed with kaldi-native-fbank's MFCC (the
same C++ as Kaldi's). Diagonal-covariance Gaussians need decorrelated features: on log-mel
filterbanks they fit far worse, which is why alignment does not reuse the feature store.
The frames line up one to one with ``prepare``'s filterbank frames when both use the same
sample rate, frame shift, window and ``snip_edges`` (the defaults of both).

Shapes: a waveform (S,) float32 in [-1, 1]; MFCC (T, C) with C = ``num_ceps``; with
``delta_order`` d the features are (T, C * (d + 1)).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kaldi_native_fbank as knf
import numpy as np

from kdpipe.corpus.features import INT16_SCALE, set_frames
from kdpipe.schema import ConfigError, from_dict, to_dict


@dataclass(frozen=True)
class MfccConfig:
    """MFCC settings; the frame settings must equal ``prepare``'s (``FbankConfig``)."""

    sample_rate: int = 16000  # as FbankConfig: the alignment has one label per fbank frame
    frame_shift_ms: float = 10.0  # as FbankConfig
    frame_length_ms: float = 25.0  # as FbankConfig
    snip_edges: bool = True  # as FbankConfig
    num_ceps: int = 13  # Kaldi's conf/mfcc.conf
    num_mel_bins: int = 23  # Kaldi's default for 16 kHz MFCC
    use_energy: bool = False  # Kaldi recipes' conf/mfcc.conf: --use-energy=false
    delta_order: int = 2  # add-deltas: deltas and delta-deltas (train_mono/train_deltas)
    delta_window: int = 2  # add-deltas' default window
    cmn: str = "speaker"  # apply-cmvn per speaker, means only (Kaldi's default, no variances)

    def __post_init__(self) -> None:
        if self.num_ceps < 1 or self.num_mel_bins < self.num_ceps:
            raise ConfigError("mfcc: need 1 <= num_ceps <= num_mel_bins")
        if self.delta_order < 0 or self.delta_window < 1:
            raise ConfigError("mfcc: delta_order must be >= 0 and delta_window >= 1")
        if self.cmn not in ("speaker", "utterance", "none"):
            raise ConfigError(f"mfcc.cmn must be speaker, utterance or none: {self.cmn!r}")

    @property
    def dim(self) -> int:
        return self.num_ceps * (self.delta_order + 1)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> MfccConfig:
        return from_dict(cls, data, "mfcc")


def mfcc_options(cfg: MfccConfig) -> Any:
    opts = knf.MfccOptions()
    # dither 0: deterministic, as kdpipe's fbank
    set_frames(
        opts.frame_opts,
        cfg.sample_rate,
        cfg.frame_shift_ms,
        cfg.frame_length_ms,
        cfg.snip_edges,
        0.0,
    )
    opts.mel_opts.num_bins = int(cfg.num_mel_bins)
    opts.num_ceps = int(cfg.num_ceps)
    opts.use_energy = bool(cfg.use_energy)
    return opts


def compute_mfcc(wave: np.ndarray, cfg: MfccConfig) -> np.ndarray:
    """MFCC of a (S,) float32 waveform in [-1, 1]: (T, num_ceps) float32 (scaled to int16
    range first, as ``compute_fbank``)."""
    mfcc = knf.OnlineMfcc(mfcc_options(cfg))
    mfcc.accept_waveform(
        float(cfg.sample_rate), (np.asarray(wave, np.float32) * INT16_SCALE).tolist()
    )
    mfcc.input_finished()
    out = np.empty((mfcc.num_frames_ready, cfg.num_ceps), dtype=np.float32)  # (T, C)
    for t in range(len(out)):
        out[t] = mfcc.get_frame(t)
    return out


def add_deltas(feats: np.ndarray, order: int = 2, window: int = 2) -> np.ndarray:
    """Kaldi's ``add-deltas``: (T, C) -> (T, C * (order + 1)), edges repeated."""
    out, cur = [np.asarray(feats, dtype=np.float32)], np.asarray(feats, dtype=np.float64)
    denom = 2.0 * sum(n * n for n in range(1, window + 1))
    for _ in range(order):
        pad = np.pad(cur, ((window, window), (0, 0)), mode="edge")  # (T + 2w, C)
        t = len(cur)
        diff = np.zeros_like(cur)
        for n in range(1, window + 1):
            diff += n * (pad[window + n : window + n + t] - pad[window - n : window - n + t])
        cur = diff / denom
        out.append(cur.astype(np.float32))
    return np.concatenate(out, axis=1)


def normalize(
    feats: Mapping[str, np.ndarray], speakers: Mapping[str, str], cfg: MfccConfig
) -> dict[str, np.ndarray]:
    """Mean normalisation of (T, C) MFCCs (per speaker, per utterance or none), then deltas:
    utterance id -> (T, dim) float32."""
    means: dict[str, np.ndarray] = {}
    if cfg.cmn == "speaker":
        sums: dict[str, tuple[np.ndarray, int]] = {}
        for utt, x in feats.items():
            total, count = sums.get(speakers[utt], (np.zeros(x.shape[1]), 0))
            sums[speakers[utt]] = (total + x.sum(axis=0, dtype=np.float64), count + len(x))
        means = {spk: total / max(count, 1) for spk, (total, count) in sums.items()}
    out = {}
    for utt, x in feats.items():
        if cfg.cmn == "speaker":
            x = x - means[speakers[utt]].astype(np.float32)
        elif cfg.cmn == "utterance" and len(x):
            x = x - x.mean(axis=0, dtype=np.float64).astype(np.float32)
        out[utt] = np.ascontiguousarray(add_deltas(x, cfg.delta_order, cfg.delta_window))
    return out
