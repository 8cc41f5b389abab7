"""Audio loading: resampling, downmix, segments and every way a file can be bad."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from kdpipe.corpus.audio import load_audio
from kdpipe.errors import AudioError
from kdpipe.testing.corpora import tone, write_wav


def peak_hz(wave: np.ndarray, sample_rate: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.fft.rfftfreq(len(wave), 1 / sample_rate)[np.argmax(spec)])


@pytest.mark.parametrize("rate", [44100, 8000])
def test_stereo_at_other_rate_is_resampled_to_16k_mono(tmp_path, rate):
    path = write_wav(tmp_path / "a.wav", tone(1000, 0.5, rate, channels=2), rate)
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 8000) <= 1
    assert abs(peak_hz(wave, 16000) - 1000) < 5
    assert 0.3 < np.abs(wave).max() < 0.6  # channels 0.5 and 0.45 amplitude, averaged


def test_downmix_averages_channels(tmp_path):
    left = tone(440, 0.25, 16000, amplitude=0.8, noise=0.0)
    stereo = np.stack([left, np.zeros_like(left)], axis=1)  # (S, 2)
    path = write_wav(tmp_path / "s.wav", stereo)
    expected = sf.read(str(path), dtype="float32")[0].mean(axis=1)
    np.testing.assert_allclose(load_audio(path, 16000), expected, atol=1e-7)


def test_same_rate_is_read_unchanged(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(300, 0.3))
    np.testing.assert_array_equal(load_audio(path, 16000), sf.read(str(path), dtype="float32")[0])


def test_segment_start_end(tmp_path):
    path = write_wav(tmp_path / "a.wav", tone(300, 1.0, noise=0.1))
    full = sf.read(str(path), dtype="float32")[0]
    np.testing.assert_array_equal(load_audio(path, 16000, 0.25, 0.5), full[4000:8000])
    np.testing.assert_array_equal(load_audio(path, 16000, 0.75), full[12000:])
    # Kaldi-style overshoot of up to 0.5 s is truncated at the end of the file
    np.testing.assert_array_equal(load_audio(path, 16000, 0.9, 1.3), full[14400:])
    with pytest.raises(AudioError, match=r"utterance u1: segment .* outside .*a\.wav"):
        load_audio(path, 16000, 1.2, 1.4, utt_id="u1")
    with pytest.raises(AudioError, match="outside"):
        load_audio(path, 16000, 0.5, 1.6)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"utterance u7: audio file not found: .*nope\.wav"):
        load_audio(tmp_path / "nope.wav", 16000, utt_id="u7")


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 4)
    with pytest.raises(AudioError, match=r"utterance u2: cannot read audio file .*bad\.wav"):
        load_audio(bad, 16000, utt_id="u2")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    sf.write(str(path), np.zeros(0, dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match=r"utterance e: audio file .*empty\.wav is empty"):
        load_audio(path, 16000, utt_id="e")


def test_non_finite_samples(tmp_path):
    wave = tone(300, 0.1)
    wave[10] = np.nan
    path = tmp_path / "nan.wav"
    sf.write(str(path), wave, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_audio(path, 16000)
