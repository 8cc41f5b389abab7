"""Filterbanks equal a direct kaldi-native-fbank call; CMVN helpers are right."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import pytest

from kdpipe.corpus.features import (
    CmvnStats,
    FbankConfig,
    apply_cmvn,
    cmvn_utterance,
    compute_fbank,
)
from kdpipe.errors import ConfigError
from kdpipe.testing.corpora import tone


def direct_knf(wave: np.ndarray, cfg: FbankConfig, scale: float = 32768.0) -> np.ndarray:
    opts = knf.FbankOptions()
    opts.frame_opts.samp_freq = cfg.sample_rate
    opts.frame_opts.frame_shift_ms = cfg.frame_shift_ms
    opts.frame_opts.frame_length_ms = cfg.frame_length_ms
    opts.frame_opts.snip_edges = cfg.snip_edges
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = cfg.num_mel_bins
    fb = knf.OnlineFbank(opts)
    fb.accept_waveform(cfg.sample_rate, (wave * scale).tolist())
    fb.input_finished()
    return np.array([fb.get_frame(i) for i in range(fb.num_frames_ready)], dtype=np.float32)


@pytest.mark.parametrize(
    "cfg",
    [FbankConfig(), FbankConfig(num_mel_bins=80, snip_edges=False), FbankConfig(sample_rate=8000)],
)
def test_equals_direct_kaldi_native_fbank(cfg):
    wave = tone(440, 0.37, cfg.sample_rate, noise=0.05)
    feats = compute_fbank(wave, cfg)
    assert feats.dtype == np.float32
    assert feats.shape == (cfg.num_frames(len(wave)), cfg.num_mel_bins)
    np.testing.assert_array_equal(feats, direct_knf(wave, cfg))


def test_samples_are_scaled_to_int16_range_like_kaldi():
    cfg = FbankConfig()
    wave = tone(440, 0.3, noise=0.05)
    shift = compute_fbank(wave, cfg) - direct_knf(wave, cfg, scale=1.0)
    # power scales by 32768^2: log-mels move up by 2 ln 32768 ~ 20.79 in every bin
    np.testing.assert_allclose(shift, 2 * np.log(32768.0), atol=1e-3)


@pytest.mark.parametrize("snip", [True, False])
def test_frame_count_matches_config_for_any_length(snip):
    cfg = FbankConfig(snip_edges=snip)
    rng = np.random.default_rng(0)
    for n in (1, 159, 160, 399, 400, 401, 560, 3217):
        wave = (0.1 * rng.standard_normal(n)).astype(np.float32)
        assert compute_fbank(wave, cfg).shape == (cfg.num_frames(n), 40)


def test_deterministic_without_dither():
    wave = tone(300, 0.2, noise=0.1)
    np.testing.assert_array_equal(
        compute_fbank(wave, FbankConfig()), compute_fbank(wave, FbankConfig())
    )


def test_cmvn_utterance_zero_mean_unit_std(rng):
    x = (3 + 2 * rng.standard_normal((50, 8))).astype(np.float32)
    y = cmvn_utterance(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(y.std(0), 1, atol=1e-4)
    assert np.all(cmvn_utterance(np.ones((1, 8), np.float32)) == 0)  # one frame: no NaN


def test_global_stats_and_apply(rng):
    parts = [rng.normal(2, 3, size=(n, 4)).astype(np.float32) for n in (5, 17, 9)]
    stats = CmvnStats(4)
    for p in parts:
        stats.add(p)
    cat = np.concatenate(parts)
    np.testing.assert_allclose(stats.mean, cat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats.std, cat.std(0), rtol=1e-5)
    y = apply_cmvn(cat, "global", stats.mean, stats.std)
    np.testing.assert_allclose(y.mean(0), 0, atol=1e-5)
    assert apply_cmvn(cat, "none") is cat
    with pytest.raises(ConfigError, match="global CMVN needs"):
        apply_cmvn(cat, "global")
