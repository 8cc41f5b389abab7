"""The recording channel: what stands between the talker and the file.

A ``Channel`` is one utterance's channel, every choice already drawn (``draws.channel``):
speed and tempo perturbation of the dry speech, a room (reverberation), a microphone (a
gentle random EQ) and a telephone line (the voice band, 8 kHz, a codec). The worker applies
them in physical order::

    speed / tempo (labels scaled) -> room -> background noise -> microphone
    -> telephone band and codec -> peak level -> 16-bit PCM

Every function is pure: the same arguments give the same samples. Shapes: audio is (S,)
float32 at the corpus rate; phone spans are ``(phone, start, end)`` in samples of that
audio, contiguous from 0 to S. scipy.signal is imported inside the functions: it takes a
second to import, and only corpora with a channel effect need it (``preload``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.corpus.synth.align import Span, rescale
from kdpipe.corpus.synth.audio import resample

CODECS = ("none", "mulaw", "adpcm")  # none: the telephone band and 8 kHz only
BAND_KINDS = ("peak", "lowshelf", "highshelf")  # the microphone EQ's biquads
SHELF_Q = 0.707  # a shelf's Q in ``biquad``: slope 1, no overshoot

TEMPO_FRAME_S = 0.025  # WSOLA frame: a few pitch periods of the lowest voices
TEMPO_TOLERANCE_S = 0.008  # how far a frame may move to continue the waveform (>= one
# period of a 125 Hz voice); the labels, scaled linearly, are off by at most this
ROOM_DRR_DB = (0.0, 8.0)  # direct-to-reverberant ratio: from the critical distance of a
# room (0 dB) to a talker about a metre from the microphone
EARLY_REFLECTIONS = 6  # floor, table, walls: the first echoes of a small room
EARLY_DELAY_S = (0.002, 0.025)  # their delays after the direct sound (0.7-8.5 m further)
EARLY_GAIN = (0.1, 0.4)  # their amplitudes relative to the direct path's (1 to 2 m further,
# off absorbing surfaces)
MIC_HIGHPASS_HZ = 80.0  # the rumble filter every speech microphone has
TELEPHONE_BAND_HZ = (300.0, 3400.0)  # the voice band of telephony (ITU-T G.712)
TELEPHONE_RATE = 8000  # narrowband telephony (G.711, GSM)
TELEPHONE_ORDER = 6  # Butterworth band-pass order, run forward and back (zero phase)
CODEC_PEAK = 0.5  # the codec sees the line at -6 dBFS peak: a phone's headroom
MU = 255  # G.711's mu (North America, Japan)

# IMA ADPCM's step sizes and index changes (IMA Digital Audio Focus and Technical Working
# Group, "Recommended Practices for Enhancing Digital Audio Compatibility", 1992).
# fmt: off
_IMA_STEPS = (
    7, 8, 9, 10, 11, 12, 13, 14, 16, 17, 19, 21, 23, 25, 28, 31, 34, 37, 41, 45, 50, 55, 60,
    66, 73, 80, 88, 97, 107, 118, 130, 143, 157, 173, 190, 209, 230, 253, 279, 307, 337, 371,
    408, 449, 494, 544, 598, 658, 724, 796, 876, 963, 1060, 1166, 1282, 1411, 1552, 1707,
    1878, 2066, 2272, 2499, 2749, 3024, 3327, 3660, 4026, 4428, 4871, 5358, 5894, 6484, 7132,
    7845, 8630, 9493, 10442, 11487, 12635, 13899, 15289, 16818, 18500, 20350, 22385, 24623,
    27086, 29794, 32767,
)
# fmt: on
_IMA_INDEX = (-1, -1, -1, -1, 2, 4, 6, 8)

Band = tuple[str, float, float, float]  # (kind: peak | lowshelf | highshelf, Hz, gain dB, Q)


@dataclass(frozen=True)
class Channel:
    """One utterance's recording channel, every random choice made (``CLEAN``: none)."""

    speed: float = 1.0  # speed perturbation: tempo and pitch x speed (1: none)
    tempo: float = 1.0  # tempo perturbation: tempo x tempo, pitch kept (1: none)
    rt60: float | None = None  # room reverberation time, s (None: dry, close-talk)
    mic: tuple[Band, ...] | None = None  # the microphone's EQ (None: flat)
    telephone: str | None = None  # codec on the telephone line, of CODECS (None: no line)
    seed: int = 0  # the room impulse response's noise and reflections

    @property
    def changes_duration(self) -> bool:
        return self.speed != 1.0 or self.tempo != 1.0

    @property
    def is_clean(self) -> bool:
        return self == Channel(seed=self.seed)

    def without_perturbation(self) -> Channel:
        """This channel at speed and tempo 1 (a keyword that no longer fits its clip)."""
        return Channel(1.0, 1.0, self.rt60, self.mic, self.telephone, self.seed)

    def describe(self) -> str:
        """``speed=0.95 tempo=1 rt60=0.43 mic=4 telephone=mulaw``: what was applied
        (``mic``: its number of EQ bands; ``-`` for an effect not applied)."""
        parts = {
            "speed": f"{self.speed:g}",
            "tempo": f"{self.tempo:g}",
            "rt60": "-" if self.rt60 is None else f"{self.rt60:g}",
            "mic": "-" if self.mic is None else str(len(self.mic)),
            "telephone": self.telephone or "-",
        }
        return " ".join(f"{key}={value}" for key, value in parts.items())


CLEAN = Channel()


def preload() -> None:
    """Import scipy.signal now (in the parent, so forked workers share it)."""
    _signal()


def _signal() -> Any:
    """scipy.signal, imported on first use: it takes a second (module docstring)."""
    import scipy.signal  # type: ignore[import-untyped]  # scipy ships no type hints

    return scipy.signal


# --- speed and tempo ------------------------------------------------------------------


def perturb(
    audio: np.ndarray, spans: list[Span], channel: Channel, sample_rate: int
) -> tuple[np.ndarray, list[Span]]:
    """Speed, then tempo perturbation of (S,) dry speech, and its spans scaled to tile
    the new (S',) audio exactly. Raises ``AlignmentIssue`` should a phone vanish."""
    if not channel.changes_duration:
        return audio, spans
    out = audio
    if channel.speed != 1.0:
        out = speed_perturb(out, channel.speed, sample_rate)
    if channel.tempo != 1.0:
        out = tempo_perturb(out, channel.tempo, sample_rate)
    return out, rescale(spans, len(out), len(out) / max(len(audio), 1))


def speed_perturb(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """(S,) -> (~S / factor,): played ``factor`` times faster, so tempo and pitch both
    change, as a tape or ``sox speed`` does (Ko et al., "Audio augmentation for speech
    recognition", Interspeech 2015: Kaldi's speed perturbation): the audio is resampled as
    if it had been recorded at ``sample_rate * factor``."""
    if factor == 1.0:
        return audio.astype(np.float32)
    return resample(audio, round(sample_rate * factor), sample_rate)


def tempo_perturb(audio: np.ndarray, factor: float, sample_rate: int) -> np.ndarray:
    """(S,) -> (round(S / factor),): ``factor`` times faster, pitch kept, by WSOLA
    (waveform-similarity overlap-add; Verhelst & Roelands, ICASSP 1993), written here in
    numpy: Hann frames ``TEMPO_FRAME_S`` long are read at ``factor`` times the output hop,
    each moved by up to ``TEMPO_TOLERANCE_S`` to the offset whose cross-correlation with
    the natural continuation of the frame before is highest, and overlap-added at 50 %."""
    n = len(audio)
    out_len = round(n / factor)
    if factor == 1.0 or n == 0:
        return audio.astype(np.float32)
    frame = 2 * max(2, round(TEMPO_FRAME_S * sample_rate / 2))
    hop = frame // 2
    tol = round(TEMPO_TOLERANCE_S * sample_rate)
    count = out_len // hop + 2  # frames covering the output
    pad = tol + frame  # room to search before the first and after the last frame
    tail = pad + frame + math.ceil(hop * factor) + hop
    x = np.concatenate([np.zeros(pad), audio.astype(np.float64), np.zeros(tail)])  # (S + ...,)
    window = np.hanning(frame + 1)[:frame]  # periodic Hann: sums to 1 at 50 % overlap
    y = np.zeros(count * hop + frame)  # (S' + ...,)
    weight = np.zeros_like(y)
    previous = pad
    for k in range(count):
        nominal = pad + round(k * hop * factor)
        position = nominal
        if k > 0:
            follow = x[previous + hop : previous + hop + frame]  # (frame,)
            region = x[nominal - tol : nominal + tol + frame]  # (frame + 2 tol,)
            score = np.correlate(region, follow, mode="valid")  # (2 tol + 1,)
            if score.max() > 0:
                position = nominal - tol + int(np.argmax(score))
        y[k * hop : k * hop + frame] += window * x[position : position + frame]
        weight[k * hop : k * hop + frame] += window
        previous = position
    y = y[:out_len] / np.maximum(weight[:out_len], 1e-3)
    return y.astype(np.float32)


# --- room -----------------------------------------------------------------------------


def room_impulse(rng: np.random.Generator, rt60: float, sample_rate: int) -> np.ndarray:
    """(L,) float32, unit energy: a synthetic room impulse response of reverberation time
    ``rt60`` (s), L = rt60 seconds (the tail's first -60 dB).

    The statistical model of a diffuse field (Polack 1993; Lehmann & Johansson 2008): the
    direct path at t = 0 (so labels keep their timing), a Gaussian-noise tail whose
    amplitude envelope exp(-3 ln(10) t / rt60) falls by 60 dB in energy at ``rt60``, its
    energy ``ROOM_DRR_DB`` (drawn) below the direct sound's, and ``EARLY_REFLECTIONS``
    discrete early reflections on top.
    """
    n = max(2, math.ceil(rt60 * sample_rate))
    t = np.arange(n) / sample_rate
    envelope = np.exp(-3.0 * math.log(10.0) * t / rt60)  # (L,) 1e-3 (-60 dB) at rt60
    tail = rng.standard_normal(n) * envelope  # (L,)
    tail[0] = 0.0
    drr = float(rng.uniform(*ROOM_DRR_DB))
    ir = tail * math.sqrt(10.0 ** (-drr / 10.0) / (float(np.sum(tail * tail)) + 1e-20))
    ir[0] = 1.0  # the direct path
    delays = np.round(rng.uniform(*EARLY_DELAY_S, size=EARLY_REFLECTIONS) * sample_rate)
    signs = np.where(rng.random(EARLY_REFLECTIONS) < 0.5, -1.0, 1.0)
    gains = rng.uniform(*EARLY_GAIN, size=EARLY_REFLECTIONS) * signs
    np.add.at(ir, np.clip(delays.astype(np.int64), 1, n - 1), gains)
    return (ir / math.sqrt(float(np.sum(ir * ir)))).astype(np.float32)


def reverberate(audio: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """(S,) convolved with the room's (L,) impulse response, cut to (S,): the tail that
    runs past the end is dropped (its direct path is at 0, so nothing moves)."""
    signal = _signal()

    if len(audio) == 0:
        return audio.astype(np.float32)
    wet = signal.fftconvolve(audio.astype(np.float64), ir.astype(np.float64))  # (S + L - 1,)
    return wet[: len(audio)].astype(np.float32)


# --- microphone -----------------------------------------------------------------------


def biquad(kind: str, freq: float, gain_db: float, q: float, sample_rate: int) -> np.ndarray:
    """(6,) second-order section ``b0 b1 b2 a0 a1 a2`` (a0 = 1) of a peaking or shelving
    EQ, by R. Bristow-Johnson's "Cookbook formulae for audio EQ biquad filter
    coefficients" (shelves with ``q`` in place of the slope: 0.707 is slope 1)."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * math.pi * min(freq, 0.45 * sample_rate) / sample_rate
    cos, alpha = math.cos(w0), math.sin(w0) / (2.0 * q)
    if kind == "peak":
        b = (1 + alpha * a, -2 * cos, 1 - alpha * a)
        den = (1 + alpha / a, -2 * cos, 1 - alpha / a)
    elif kind in ("lowshelf", "highshelf"):
        s = 2.0 * math.sqrt(a) * alpha
        sign = 1.0 if kind == "lowshelf" else -1.0
        b = (
            a * ((a + 1) - sign * (a - 1) * cos + s),
            sign * 2 * a * ((a - 1) - sign * (a + 1) * cos),
            a * ((a + 1) - sign * (a - 1) * cos - s),
        )
        den = (
            (a + 1) + sign * (a - 1) * cos + s,
            -sign * 2 * ((a - 1) + sign * (a + 1) * cos),
            (a + 1) + sign * (a - 1) * cos - s,
        )
    else:
        raise ValueError(f"unknown EQ band kind {kind!r}; choose {', '.join(BAND_KINDS)}")
    return np.array([*b, *den]) / den[0]


def microphone(audio: np.ndarray, bands: tuple[Band, ...], sample_rate: int) -> np.ndarray:
    """(S,) -> (S,): a microphone's colouring: the EQ ``bands`` (each a ``biquad``, gains
    of a few dB, as the response of real speech microphones wanders within +-6 dB) after a
    2nd-order Butterworth high-pass at ``MIC_HIGHPASS_HZ``; causal, as a microphone is."""
    signal = _signal()

    highpass = signal.butter(2, MIC_HIGHPASS_HZ, "highpass", fs=sample_rate, output="sos")  # (1, 6)
    eq = [biquad(kind, f, g, q, sample_rate) for kind, f, g, q in bands]
    sos = np.vstack([highpass, *eq]) if eq else highpass  # (1 + bands, 6)
    return signal.sosfilt(sos, audio.astype(np.float64)).astype(np.float32)


# --- telephone ------------------------------------------------------------------------


def telephone(audio: np.ndarray, codec: str, sample_rate: int) -> np.ndarray:
    """(S,) -> (S,): a narrowband telephone line: resampled to ``TELEPHONE_RATE``, the
    ``TELEPHONE_BAND_HZ`` voice band (Butterworth, forward and back so nothing moves),
    ``codec`` (``none``, ``mulaw``: G.711, ``adpcm``: IMA ADPCM at 32 kbit/s), and back
    to ``sample_rate``, where the line has no energy above 4 kHz."""
    signal = _signal()

    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose {', '.join(CODECS)}")
    line = resample(audio, sample_rate, TELEPHONE_RATE).astype(np.float64)  # (S8,)
    sos = signal.butter(
        TELEPHONE_ORDER, TELEPHONE_BAND_HZ, "bandpass", fs=TELEPHONE_RATE, output="sos"
    )  # (ORDER, 6)
    if len(line) > 1:
        padlen = min(3 * (2 * len(sos) + 1), len(line) - 1)
        line = signal.sosfiltfilt(sos, line, padlen=padlen)
    if codec != "none":
        peak = float(np.max(np.abs(line)))
        if peak > 0:
            scaled = line * (CODEC_PEAK / peak)
            coded = mulaw(scaled) if codec == "mulaw" else adpcm(scaled)
            line = coded.astype(np.float64) * (peak / CODEC_PEAK)
    back = resample(line.astype(np.float32), TELEPHONE_RATE, sample_rate)  # (~S,)
    return _fit(back, len(audio))


def mulaw(x: np.ndarray) -> np.ndarray:
    """(S,) in [-1, 1] -> (S,): G.711 mu-law (mu = 255) companding quantisation, 8 bits a
    sample (sign and 7 bits of log magnitude), in its continuous form (G.711 itself uses a
    15-segment approximation of the same curve)."""
    clipped = np.clip(x.astype(np.float64), -1.0, 1.0)
    compressed = np.sign(clipped) * np.log1p(MU * np.abs(clipped)) / math.log1p(MU)
    code = np.round(compressed * 127.0) / 127.0  # 255 levels
    return (np.sign(code) * np.expm1(np.abs(code) * math.log1p(MU)) / MU).astype(np.float32)


def adpcm(x: np.ndarray) -> np.ndarray:
    """(S,) in [-1, 1] -> (S,): IMA (DVI) ADPCM, 4 bits a sample (32 kbit/s at 8 kHz),
    encoded and decoded: the decoder's reconstruction. A low-bit-rate waveform codec with
    GSM's kind of error (adaptive step, audible granular noise); not GSM itself."""
    samples = np.clip(np.round(x * 32767.0), -32768, 32767).astype(np.int64).tolist()
    out = [0] * len(samples)
    predictor, index = 0, 0
    steps, changes = _IMA_STEPS, _IMA_INDEX
    for i, sample in enumerate(samples):
        step = steps[index]
        diff = sample - predictor
        code = 0
        if diff < 0:
            code, diff = 8, -diff
        delta = step >> 3
        if diff >= step:
            code |= 4
            diff -= step
            delta += step
        step >>= 1
        if diff >= step:
            code |= 2
            diff -= step
            delta += step
        step >>= 1
        if diff >= step:
            code |= 1
            delta += step
        predictor = predictor - delta if code & 8 else predictor + delta
        predictor = -32768 if predictor < -32768 else min(predictor, 32767)
        index = min(max(index + changes[code & 7], 0), 88)
        out[i] = predictor
    return (np.asarray(out, dtype=np.float64) / 32767.0).astype(np.float32)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """(S',) cut or zero-padded to (n,)."""
    if len(x) >= n:
        return x[:n].astype(np.float32)
    return np.concatenate([x, np.zeros(n - len(x), np.float32)]).astype(np.float32)


def summary(channels: list[Channel]) -> dict[str, Any]:
    """How many utterances got each effect: what ``synth.json`` records."""
    codecs: dict[str, int] = {}
    for ch in channels:
        if ch.telephone is not None:
            codecs[ch.telephone] = codecs.get(ch.telephone, 0) + 1
    return {
        "speed": sum(ch.speed != 1.0 for ch in channels),
        "tempo": sum(ch.tempo != 1.0 for ch in channels),
        "reverb": sum(ch.rt60 is not None for ch in channels),
        "mic": sum(ch.mic is not None for ch in channels),
        "telephone": dict(sorted(codecs.items())),
        "clean": sum(ch.is_clean for ch in channels),
    }
