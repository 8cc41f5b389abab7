"""Speak one text with one voice: 16 kHz audio plus clean phone timings.

Shapes: audio is (S,) float32 in [-1, 1] at ``sample_rate``; phone spans are
``(phone, start, end)`` in samples of that audio (or seconds in ``Speech.phones``),
contiguous from 0 to S.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from kdpipe.corpus.synth import espeak
from kdpipe.corpus.synth.align import clean_spans, rescale
from kdpipe.corpus.synth.phonemes import SIL, normalize_phone
from kdpipe.corpus.synth.spoken import Pronunciation, word_pronunciations
from kdpipe.corpus.synth.voices import check_voice

SAMPLE_RATE = 16000  # Speech Commands and most ASR corpora


class Speech(NamedTuple):
    """What ``speak`` returns; unpacks as ``audio, phones``."""

    audio: np.ndarray  # (S,) float32 in [-1, 1] at 16 kHz (or the rate asked for)
    phones: list[tuple[str, float, float]]  # (phone, start_s, end_s), contiguous, sil included


def resample(x: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    """(S,) float32 at ``rate_in`` to (S',) float32 at ``rate_out`` (soxr, high quality)."""
    import soxr  # soxr stays out of light importers (the synth package, pipeline)

    if rate_in == rate_out:
        return x.astype(np.float32)
    return soxr.resample(x.astype(np.float32), rate_in, rate_out, quality="HQ").astype(np.float32)


def synthesize_spans(
    text: str,
    voice_name: str,
    rate: int,
    pitch: int,
    pitch_range: int,
    seed: int,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, list[tuple[str, int, int]]]:
    """(S,) float32 audio at ``sample_rate`` and its clean phone spans in samples.

    Raises ``SynthError`` (``AlignmentIssue`` for untrustworthy timings).
    """
    audio, spans, _ = synthesize_words(
        text, voice_name, rate, pitch, pitch_range, seed, sample_rate
    )
    return audio, spans


def synthesize_words(
    text: str,
    voice_name: str,
    rate: int,
    pitch: int,
    pitch_range: int,
    seed: int,
    sample_rate: int = SAMPLE_RATE,
) -> tuple[np.ndarray, list[tuple[str, int, int]], tuple[Pronunciation | None, ...]]:
    """``synthesize_spans``, plus each word's phones as spoken (``spoken``): None where the
    word events do not split it, and for every word should eSpeak's phones (pauses left
    out) not be those of the clean spans."""
    raw = espeak.synthesize(text, voice_name, rate, pitch, pitch_range, seed)
    spans = clean_spans(raw.phones, raw.samples, raw.sample_rate, raw.end_sample)
    audio = resample(raw.samples.astype(np.float32) / 32768.0, raw.sample_rate, sample_rate)
    spans = rescale(spans, len(audio), sample_rate / raw.sample_rate)
    words = word_pronunciations(text, raw)
    said = [normalize_phone(name) for name, _, _ in raw.phones]
    if [p for p in said if p != SIL] != [phone for phone, _, _ in spans if phone != SIL]:
        words = (None,) * len(words)
    return audio, spans, words


def speak(
    text: str,
    voice: str = "en-us",
    variant: str | None = None,
    *,
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    seed: int = 0,
    sample_rate: int = SAMPLE_RATE,
) -> Speech:
    """Speak ``text`` with accent ``voice`` (e.g. ``en-us``) and optional ``variant`` (``m3``).

    ``rate`` is words per minute; ``pitch`` and ``pitch_range`` are 0..99 (50 = the voice's
    own). The same arguments always give the same samples. Unknown accents or variants
    raise ``SynthError``.
    """
    name = check_voice(voice, variant)
    audio, spans = synthesize_spans(text, name, rate, pitch, pitch_range, seed, sample_rate)
    return Speech(
        audio, [(phone, start / sample_rate, end / sample_rate) for phone, start, end in spans]
    )
