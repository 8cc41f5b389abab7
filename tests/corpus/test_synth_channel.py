"""The recording channel of ``corpus synth`` (``channel``): each effect measured, the
labels still tiling the audio, determinism, defaults that change nothing."""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.readers import read_corpus
from kdpipe.corpus.synth import (
    KeywordSynthConfig,
    PhoneSynthConfig,
    speak,
    synth_keywords,
    synth_phones,
)
from kdpipe.corpus.synth import channel as ch
from kdpipe.corpus.synth.phones import plan_phones
from kdpipe.corpus.synth.settings import CHANNEL_KEYS, REALISM
from kdpipe.errors import ConfigError
from kdpipe.testing.corpora import file_digests

SR = 16000
HI_HZ = 3600.0


def phones_cfg(**kw) -> PhoneSynthConfig:
    values = {"num_utts": 6, "num_voices": 3, "max_words": 4, "noise_prob": 0.0,
              "pad_seconds": (0.25, 0.3), **kw}  # fmt: skip
    return PhoneSynthConfig.from_dict(values)


def share_above(x: np.ndarray, hz: float = HI_HZ, sample_rate: int = SR) -> float:
    """Share of the energy of (S,) ``x`` above ``hz``."""
    power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / sample_rate)
    return float(power[freqs > hz].sum() / power.sum())


def t20(x: np.ndarray, sample_rate: int = SR) -> float:
    """Reverberation time from the Schroeder-integrated decay of an impulse response,
    fitted from -5 to -25 dB (ISO 3382's T20), in seconds."""
    energy = np.cumsum((x.astype(np.float64) ** 2)[::-1])[::-1]
    db = 10 * np.log10(energy / energy[0] + 1e-30)
    first, last = int(np.argmax(db <= -5)), int(np.argmax(db <= -25))
    slope = np.polyfit(np.arange(first, last) / sample_rate, db[first:last], 1)[0]
    return -60.0 / slope


def snr(clean: np.ndarray, coded: np.ndarray) -> float:
    err = coded.astype(np.float64) - clean
    return 10 * math.log10(float(np.sum(clean**2)) / float(np.sum(err**2)))


def harmonics(f0: float = 150.0, seconds: float = 1.0, rate: int = 8000) -> np.ndarray:
    """(S,) a voiced-like tone: 12 harmonics of ``f0`` falling 6 dB an octave, peak 0.5."""
    t = np.arange(round(seconds * rate)) / rate
    x = sum(np.sin(2 * np.pi * f0 * k * t + k) / k for k in range(1, 13))
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


def peak_hz(x: np.ndarray, sample_rate: int = SR) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sample_rate)[int(np.argmax(spectrum))])


def wavs(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: sf.read(str(p), dtype="float32")[0] for p in sorted((out / "wav").glob("*"))}


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    out = tmp_path_factory.mktemp("dry") / "out"
    synth_phones(out, phones_cfg(), jobs=1, progress=False)
    return out


# --- the effects, one by one ------------------------------------------------------------


def test_room_impulse_decays_in_its_rt60():
    click = np.zeros(2 * SR, np.float32)
    click[0] = 1.0
    measured = []
    for rt60 in (0.25, 0.5, 0.9):
        ir = ch.room_impulse(np.random.default_rng(3), rt60, SR)
        assert ir[0] == np.max(np.abs(ir)) and abs(float(np.sum(ir**2)) - 1) < 1e-4
        measured.append(t20(ch.reverberate(click, ir)))
        assert abs(measured[-1] - rt60) < 0.3 * rt60, (rt60, measured[-1])
    assert measured == sorted(measured)
    speech = speak("hello there", seed=1).audio
    wet = ch.reverberate(speech, ch.room_impulse(np.random.default_rng(0), 0.5, SR))
    assert wet.shape == speech.shape and wet.dtype == np.float32


def test_reverberant_speech_decays_slower_after_its_end(dry, tmp_path):
    out = tmp_path / "wet"
    synth_phones(out, phones_cfg(reverb_prob=1.0), jobs=1, progress=False)
    corpus = read_corpus(dry)
    dry_wavs, wet_wavs = wavs(dry), wavs(out)
    for u in corpus:
        frames = corpus.alignments[u.id]
        sil = corpus.labels.index("sil")
        end = (max(i for i, f in enumerate(frames) if f != sil) + 1) * 160  # speech end
        dry_tail, wet_tail = (decay_ms(w[u.id], end) for w in (dry_wavs, wet_wavs))
        assert wet_tail > dry_tail + 60, (u.id, dry_tail, wet_tail)
        assert len(dry_wavs[u.id]) == len(wet_wavs[u.id])


def decay_ms(x: np.ndarray, end: int) -> float:
    """Milliseconds after ``end`` until the 5 ms energy falls 30 dB below that of the
    last 50 ms of speech."""
    level = float(np.mean(x[end - 800 : end].astype(np.float64) ** 2))
    for k in range(end, len(x) - 80, 80):
        if np.mean(x[k : k + 80].astype(np.float64) ** 2) < level * 1e-3:
            return (k - end) / SR * 1000
    return (len(x) - end) / SR * 1000


def test_telephone_removes_energy_above_its_band():
    noise = np.random.default_rng(0).standard_normal(2 * SR).astype(np.float32)
    speech = speak("she sells sixty six sea shells", seed=2).audio
    for x, before in ((noise, 0.5), (speech, 0.05)):
        assert share_above(x) > before
        for codec in ch.CODECS:
            line = ch.telephone(x, codec, SR)
            assert line.shape == x.shape and share_above(line) < 0.01, codec
            assert share_above(line, 200.0) > 0.9  # the voice band stays
            low = np.abs(np.fft.rfft(line))[: int(150 * len(line) / SR)]  # below 150 Hz
            assert np.sum(low**2) < 0.01 * np.sum(np.abs(np.fft.rfft(line)) ** 2)


def test_codecs_quantise_with_bounded_error():
    tone = harmonics()
    for codec, lo, hi in ((ch.mulaw, 30.0, 45.0), (ch.adpcm, 10.0, 30.0)):
        coded = codec(tone)
        assert coded.shape == tone.shape and not np.array_equal(coded, tone)
        assert lo < snr(tone, coded) < hi, (codec.__name__, snr(tone, coded))
    quiet = tone * 0.01  # mu-law keeps its SNR at low levels; 8-bit linear would not
    assert snr(quiet, ch.mulaw(quiet)) > 25
    assert len(np.unique(ch.mulaw(tone))) <= 255


def test_speed_and_tempo_change_duration_and_only_speed_pitch():
    tone = np.sin(2 * np.pi * 200 * np.arange(SR) / SR).astype(np.float32)  # 1 s, 200 Hz
    for factor in (0.9, 1.1):
        fast = ch.speed_perturb(tone, factor, SR)
        stretched = ch.tempo_perturb(tone, factor, SR)
        for y in (fast, stretched):
            assert abs(len(y) - SR / factor) < 160  # within a frame
        assert abs(peak_hz(fast) - 200 * factor) < 3
        assert abs(peak_hz(stretched) - 200) < 3
        assert np.std(stretched[160:-160]) > 0.6  # no gaps or cancellations


def test_perturbed_labels_tile_the_audio(dry, tmp_path):
    cfg = phones_cfg(speed_prob=1.0, tempo_prob=1.0)
    out = tmp_path / "fast"
    synth_phones(out, cfg, jobs=1, progress=False)
    _, _, jobs, _ = plan_phones(cfg)
    dry_wavs, fast_wavs = wavs(dry), wavs(out)
    corpus, fbank = read_corpus(out), FbankConfig()
    for job in jobs:
        utt, pad = Path(job.path).stem, sum(job.pad)
        assert job.channel.speed != 1 and job.channel.tempo != 1
        speech = len(dry_wavs[utt]) - pad
        expected = speech / job.channel.speed / job.channel.tempo + pad
        assert abs(len(fast_wavs[utt]) - expected) < 160  # within a frame
        assert len(corpus.alignments[utt]) == fbank.num_frames(len(fast_wavs[utt]))
    lines = (out / "channel.txt").read_text().splitlines()
    assert len(lines) == 6 and all("rt60=- mic=- telephone=-" in line for line in lines)
    # the true spans (an aligned corpus's reference) tile the new audio, same phones
    synth_phones(tmp_path / "dry_spans", phones_cfg(labels="aligned"), jobs=1, progress=False)
    synth_phones(tmp_path / "fast_spans", cfg.__class__.from_dict({**cfg.to_dict(),
                 "labels": "aligned"}), jobs=1, progress=False)  # fmt: skip
    dry_spans, fast_spans = spans(tmp_path / "dry_spans"), spans(tmp_path / "fast_spans")
    assert dry_spans.keys() == fast_spans.keys() == fast_wavs.keys()
    for utt, rows in fast_spans.items():
        assert rows[0][1] == 0 and abs(rows[-1][2] - len(fast_wavs[utt]) / SR) < 1e-5
        assert all(abs(a[2] - b[1]) < 1e-5 for a, b in pairwise(rows))
        assert [r[0] for r in rows] == [r[0] for r in dry_spans[utt]]


def spans(out: Path) -> dict[str, list[tuple[str, float, float]]]:
    """utt -> [(phone, start s, end s)] of the reference ``phones.ctm`` of every split."""
    got: dict[str, list[tuple[str, float, float]]] = {}
    for ctm in sorted(out.glob("reference/*/phones.ctm")):
        for line in ctm.read_text().splitlines():
            utt, _, start, dur, phone = line.split()
            got.setdefault(utt, []).append((phone, float(start), float(start) + float(dur)))
    return got


def test_microphone_keeps_length_and_colours_the_spectrum():
    noise = np.random.default_rng(1).standard_normal(2 * SR).astype(np.float32)
    bands = (("peak", 1000.0, 6.0, 2.0), ("highshelf", 5000.0, -6.0, ch.SHELF_Q))
    coloured = ch.microphone(noise, bands, SR)
    assert coloured.shape == noise.shape

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        power = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
        freqs = np.fft.rfftfreq(len(x), 1 / SR)
        return 10 * math.log10(float(power[(freqs >= lo) & (freqs < hi)].mean()))

    gain = {b: band_db(coloured, *b) - band_db(noise, *b) for b in ((900, 1100), (2000, 2500),
            (6500, 7500), (20, 40))}  # fmt: skip
    assert abs(gain[900, 1100] - 6) < 1.0 and abs(gain[2000, 2500]) < 1.5
    assert abs(gain[6500, 7500] + 6) < 1.0 and gain[20, 40] < -15  # the 80 Hz high-pass


# --- the corpora ------------------------------------------------------------------------


def test_realism_same_seed_same_bytes_whatever_jobs(tmp_path):
    cfg = PhoneSynthConfig.for_size("small", True, num_utts=20, num_voices=3, max_words=3)
    synth_phones(tmp_path / "a", cfg, jobs=1, progress=False)
    synth_phones(tmp_path / "b", cfg, jobs=1, progress=False)
    synth_phones(tmp_path / "c", cfg, jobs=2, progress=False)
    digests = file_digests(tmp_path / "a")
    assert digests == file_digests(tmp_path / "b") == file_digests(tmp_path / "c")
    meta = json.loads((tmp_path / "a" / "synth.json").read_text())
    record = meta["channel"]
    assert all(record[k] > 0 for k in ("speed", "tempo", "reverb", "mic"))
    assert record["telephone"] and meta["config"]["reverb_prob"] == REALISM["reverb_prob"]

    kw = KeywordSynthConfig.for_size(
        "small", True, num_utts=20, num_voices=3, words=("yes", "no"), noise_prob=1.0
    )
    synth_keywords(tmp_path / "k1", kw, jobs=1, progress=False)
    synth_keywords(tmp_path / "k2", kw, jobs=2, progress=False)
    assert file_digests(tmp_path / "k1") == file_digests(tmp_path / "k2")
    assert len((tmp_path / "k1" / "channel.txt").read_text().splitlines()) == 20


def test_telephone_corpus_is_band_limited(tmp_path):
    cfg = phones_cfg(telephone_prob=1.0, codecs=("adpcm", "mulaw"), noise_prob=1.0)
    synth_phones(tmp_path / "tel", cfg, jobs=1, progress=False)
    for x in wavs(tmp_path / "tel").values():
        assert share_above(x) < 0.01
    lines = (tmp_path / "tel" / "channel.txt").read_text().splitlines()
    assert all(line.endswith(("telephone=adpcm", "telephone=mulaw")) for line in lines)


def test_keyword_too_long_when_slowed_falls_back_to_factor_1(tmp_path):
    cfg = KeywordSynthConfig.from_dict({
        "num_utts": 10, "num_voices": 3, "words": ("backward", "forward", "up"),
        "speed_prob": 1.0, "speed": (0.5, 0.5), "clip_seconds": 0.7,
    })  # fmt: skip
    summary = synth_keywords(tmp_path / "kw", cfg, jobs=1, progress=False)
    assert summary.total == 10
    for p in (tmp_path / "kw").rglob("*.wav"):
        assert sf.info(str(p)).frames == round(0.7 * SR)
    said = [line.split()[1] for line in (tmp_path / "kw" / "channel.txt").read_text().splitlines()]
    assert "speed=0.5" in said and "speed=1" in said  # some fit at half speed, some not


def test_defaults_change_nothing():
    for cls in (PhoneSynthConfig, KeywordSynthConfig):
        assert not set(CHANNEL_KEYS) & set(cls().to_dict())
        assert not cls().has_channel
    # the fingerprints of corpora made before the channel existed
    assert PhoneSynthConfig().fingerprint == "0478537f7d277738"
    assert KeywordSynthConfig().fingerprint == "233c70032d99617e"
    assert PhoneSynthConfig(reverb_prob=0.0, rt60=[0.2, 0.9]).fingerprint == "0478537f7d277738"
    one = PhoneSynthConfig(reverb_prob=0.5).to_dict()
    assert set(CHANNEL_KEYS) <= set(one) and one["rt60"] == [0.2, 0.9]
    assert PhoneSynthConfig.from_dict(one) == PhoneSynthConfig(reverb_prob=0.5)
    preset = PhoneSynthConfig.for_size("small", realism=True, reverb_prob=0.0)
    assert preset.reverb_prob == 0.0 and preset.mic_prob == REALISM["mic_prob"]


def test_bad_values_are_one_line_config_errors():
    cases = (
        ({"reverb_prob": 1.5}, "reverb_prob must be in \\[0, 1\\]"),
        ({"rt60": [0.9, 0.2]}, "rt60 must be \\[low, high\\]"),
        ({"codecs": ["mulaw", "gsm"]}, "codecs must be some of none, mulaw, adpcm"),
        ({"codecs": []}, "codecs must be some of"),
        ({"speed": [0.9, 3.0]}, "speed must be"),
        ({"mic_gain_db": -1.0}, "mic_gain_db must be in"),
    )
    for values, message in cases:
        with pytest.raises(ConfigError, match=message) as info:
            phones_cfg(**values)
        assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="realism must be true or false"):
        PhoneSynthConfig.for_size("small", realism="yes")  # type: ignore[arg-type]
    r = CliRunner().invoke(
        app, ["corpus", "synth", "phones", "/nonexistent/x", "--realism", "--mic-prob", "2"]
    )
    assert r.exit_code == 1 and "mic_prob must be in [0, 1]" in r.output
    assert "Traceback" not in r.output
