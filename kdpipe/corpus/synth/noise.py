"""Background noise: white, pink, and babble (other synthetic talkers), mixed at an SNR.

Shapes: every signal is (S,) float32 at the corpus rate.
"""

from __future__ import annotations

import numpy as np

NOISE_TYPES = ("white", "pink", "babble")


def white(rng: np.random.Generator, n: int) -> np.ndarray:
    """Gaussian white noise, unit RMS, shape (n,)."""
    return rng.standard_normal(n).astype(np.float32)


def pink(rng: np.random.Generator, n: int) -> np.ndarray:
    """1/f (pink) noise by shaping white noise's spectrum, unit RMS, shape (n,)."""
    size = 1 << max(n - 1, 1).bit_length()  # a power of two: FFTs of odd sizes are slow
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freq = np.arange(len(spectrum), dtype=np.float64)
    freq[0] = 1.0  # no DC blow-up
    x = np.fft.irfft(spectrum / np.sqrt(freq), size)[:n]
    return (x / (np.sqrt(np.mean(x * x)) + 1e-12)).astype(np.float32)


def babble(rng: np.random.Generator, n: int, bank: np.ndarray) -> np.ndarray:
    """A random (n,) stretch of the babble ``bank`` (wrapping round), unit RMS."""
    start = int(rng.integers(len(bank)))
    x = np.take(bank, np.arange(start, start + n), mode="wrap").astype(np.float32)
    return x / (float(np.sqrt(np.mean(x * x))) + 1e-12)


def mix_babble_bank(talkers: list[np.ndarray], length: int) -> np.ndarray:
    """Sum talker tracks (each tiled or cut to ``length``, scaled to unit RMS), shape (length,)."""
    out = np.zeros(length, dtype=np.float64)
    for talker in talkers:
        track = np.resize(talker.astype(np.float64), length)
        out += track / (np.sqrt(np.mean(track * track)) + 1e-12)
    return (out / (np.sqrt(np.mean(out * out)) + 1e-12)).astype(np.float32)


def add_noise(
    speech: np.ndarray, noise: np.ndarray, snr_db: float, active: slice | None = None
) -> np.ndarray:
    """``speech`` plus ``noise`` scaled so speech power / noise power = ``snr_db``.

    Speech power is measured over ``active`` (the spoken part, not the padding); noise
    power over the whole of ``noise`` (same length as ``speech``).
    """
    spoken = speech[active] if active is not None else speech
    p_speech = float(np.mean(np.square(spoken, dtype=np.float64))) if len(spoken) else 0.0
    p_noise = float(np.mean(np.square(noise, dtype=np.float64))) + 1e-20
    gain = np.sqrt(p_speech / (p_noise * 10.0 ** (snr_db / 10.0)))
    return (speech + gain * noise).astype(np.float32)
