"""Random choices both tasks make up front, all from the seed: voices, splits, prosody,
background noise, the recording channel, and the babble bank.

Every choice is drawn here in a fixed order, before any work is shared out, so the same
seed gives the same corpus whatever the number of workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.resources import files

import numpy as np

from kdpipe.corpus.synth.audio import resample
from kdpipe.corpus.synth.channel import CLEAN, SHELF_Q, Band, Channel
from kdpipe.corpus.synth.espeak import synthesize
from kdpipe.corpus.synth.noise import mix_babble_bank
from kdpipe.corpus.synth.settings import BaseSynthConfig
from kdpipe.corpus.synth.voices import Voice, default_variants, sample_voices, split_voices
from kdpipe.corpus.synth.worker import Background, Prosody

BABBLE_TALKERS = 6  # talkers summed into the babble bank (a crowd, not one voice)
BABBLE_SECONDS = 15.0  # length of the bank; clips take random stretches of it
_TASKS = {"keywords": 1, "phones": 2}
_STREAMS = {"voices": 1, "utterances": 2, "babble": 3, "channel": 4}
MIC_LOW_SHELF_HZ = (100.0, 300.0)  # a microphone's bass: proximity boost or a thin capsule
MIC_HIGH_SHELF_HZ = (2500.0, 6000.0)  # its treble: presence lift or roll-off
MIC_PEAK_HZ = (300.0, 5000.0)  # resonances of capsule and housing (log-uniform)
MIC_PEAK_Q = (0.7, 3.0)  # from broad to narrow resonances
MIC_PEAKS = 2  # resonances per microphone


def builtin_words() -> list[str]:
    """The built-in word list (``words.txt``): a few hundred common English words."""
    text = files("kdpipe.corpus.synth").joinpath("words.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def rng_for(config: BaseSynthConfig, stream: str) -> np.random.Generator:
    """An independent random stream per purpose, from the seed and the task."""
    key = [config.seed, _TASKS[config.TASK], _STREAMS[stream]]
    return np.random.default_rng(np.random.SeedSequence(key))


def plan_voices(config: BaseSynthConfig) -> tuple[list[Voice], dict[str, str]]:
    """The voices and speaker id -> split (by variant, so dev/test timbres are unseen)."""
    rng = rng_for(config, "voices")
    if config.variants is None:
        variants: Sequence[str | None] = default_variants()
    else:
        variants = [None if v == "" else v for v in config.variants]
    voices = sample_voices(
        rng,
        config.num_voices,
        config.accents,
        variants,
        config.wpm,
        config.pitch,
        config.pitch_range,
    )
    return voices, split_voices(voices, config.dev_fraction, config.test_fraction, rng)


def prosody(config: BaseSynthConfig, voice: Voice, rng: np.random.Generator) -> Prosody:
    """The voice's base rate/pitch/range, jittered for one utterance."""
    jitter = config.wpm_jitter
    rate = round(voice.wpm * (1 + rng.uniform(-jitter, jitter)))
    pitch = voice.pitch + int(rng.integers(-config.pitch_jitter, config.pitch_jitter + 1))
    rng_range = config.pitch_range_jitter
    prange = voice.pitch_range + int(rng.integers(-rng_range, rng_range + 1))
    return Prosody(
        voice.espeak_name,
        int(np.clip(rate, 80, 450)),
        int(np.clip(pitch, 0, 99)),
        int(np.clip(prange, 0, 99)),
        int(rng.integers(2**31)),
    )


def background(config: BaseSynthConfig, rng: np.random.Generator) -> Background:
    """Noise kind and SNR (or none), peak level and a noise seed for one utterance."""
    noisy = config.noise_types and rng.random() < config.noise_prob
    kind = config.noise_types[int(rng.integers(len(config.noise_types)))] if noisy else "none"
    snr = float(rng.uniform(*config.snr_db))
    level = float(rng.uniform(*config.level_db))
    return Background(kind, round(snr, 2), round(level, 2), int(rng.integers(2**31)))


def channel(config: BaseSynthConfig, rng: np.random.Generator) -> Channel:
    """One utterance's recording channel (``CLEAN`` when the config has none).

    Each utterance takes one seed from ``rng`` and draws every value from it whatever the
    probabilities, so turning one effect on, or changing its share, moves no other draw.
    """
    if not config.has_channel:
        return CLEAN
    own = np.random.default_rng(int(rng.integers(2**63)))
    coins = own.random(5)  # reverb, telephone, speed, tempo, mic
    rt60 = round(float(own.uniform(*config.rt60)), 3)
    codecs = config.codecs
    codec = codecs[min(int(own.random() * len(codecs)), len(codecs) - 1)]
    speed = round(float(own.uniform(*config.speed)), 3)
    tempo = round(float(own.uniform(*config.tempo)), 3)
    mic = mic_bands(own, config.mic_gain_db)
    seed = int(own.integers(2**31))
    return Channel(
        speed=speed if coins[2] < config.speed_prob else 1.0,
        tempo=tempo if coins[3] < config.tempo_prob else 1.0,
        rt60=rt60 if coins[0] < config.reverb_prob else None,
        mic=mic if coins[4] < config.mic_prob else None,
        telephone=codec if coins[1] < config.telephone_prob else None,
        seed=seed,
    )


def mic_bands(rng: np.random.Generator, gain_db: float) -> tuple[Band, ...]:
    """A random microphone EQ: a low and a high shelf and ``MIC_PEAKS`` resonances, each
    gain uniform in +- ``gain_db``."""

    def gain() -> float:
        return round(float(rng.uniform(-gain_db, gain_db)), 2)

    bands: list[Band] = [
        ("lowshelf", round(float(rng.uniform(*MIC_LOW_SHELF_HZ))), gain(), SHELF_Q),
        ("highshelf", round(float(rng.uniform(*MIC_HIGH_SHELF_HZ))), gain(), SHELF_Q),
    ]
    lo, hi = np.log(MIC_PEAK_HZ)
    for _ in range(MIC_PEAKS):
        freq = round(float(np.exp(rng.uniform(lo, hi))))
        bands.append(("peak", freq, gain(), round(float(rng.uniform(*MIC_PEAK_Q)), 2)))
    return tuple(bands)


def needs_babble(config: BaseSynthConfig) -> bool:
    return config.noise_prob > 0 and "babble" in config.noise_types


def babble_bank(
    config: BaseSynthConfig, voices: Sequence[Voice], words: Sequence[str]
) -> np.ndarray:
    """(S,) float32: ``BABBLE_TALKERS`` talkers (train voices) saying random ``words``."""
    rng = rng_for(config, "babble")
    length = int(BABBLE_SECONDS * config.sample_rate)
    talkers = []
    for _ in range(BABBLE_TALKERS):
        voice = voices[int(rng.integers(len(voices)))]
        parts: list[np.ndarray] = []
        while sum(len(part) for part in parts) < length:
            text = " ".join(words[int(i)] for i in rng.integers(len(words), size=8))
            said = prosody(config, voice, rng)
            raw = synthesize(text, said.voice, said.rate, said.pitch, said.pitch_range, said.seed)
            x = raw.samples.astype(np.float32) / 32768.0  # (S,) at eSpeak's rate
            parts.append(resample(x, raw.sample_rate, config.sample_rate))
        talkers.append(np.concatenate(parts)[:length])
    return mix_babble_bank(talkers, length)
