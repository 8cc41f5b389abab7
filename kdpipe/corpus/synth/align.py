"""eSpeak phone events to clean, contiguous phone spans over the audio.

Three eSpeak habits are repaired, each measured on the built-in word list in all accents:

- a post-vocalic ``l``/``r`` is folded into the vowel before it and gets a zero-length
  event (56 ``l`` and 16 ``r`` in 5,000 phones); measured vowel+l spans are 12-29 % longer
  than the vowel alone, so the folded phone gets the last ``FOLD_SHARE`` of that span;
- a stop's event marks its burst, leaving the closure silence inside the phone before it
  (75 % of phones before a stop end in > 10 ms of near-silence, against 11 % otherwise), so
  that quiet tail is moved into the stop;
- consecutive pauses are merged into one ``sil``.

Shapes: ``samples`` is (S,) int16 at the engine rate; spans are ``(phone, start, end)`` in
samples, contiguous from 0 to S.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from kdpipe.corpus.synth.phonemes import PHONES, SIL, STOPS, normalize_phone
from kdpipe.errors import SynthError

FOLD_SHARE = 0.2  # share of the previous span a zero-length (folded) phone gets
QUIET_WINDOW = 64  # samples (2.9 ms at 22050 Hz) per RMS window when finding closures
QUIET_REL = 0.02  # closure: window RMS below 2 % (-34 dB) of the loud windows' RMS
QUIET_FLOOR = 64.0  # ... and never a threshold below this (int16 units)
KEEP_SHARE = 0.25  # a phone keeps at least this share of its span when its tail moves
MAX_CLOSURE_S = 0.12  # longest closure moved into a stop (seconds)
MAX_ECHO_S = 0.5  # echo voices run on after the END event (measured: < 0.5 s)

_KNOWN = frozenset(PHONES)


class AlignmentIssue(SynthError):
    """An utterance whose phone timings cannot be trusted (dropped and counted)."""


Span = tuple[str, int, int]


@dataclass
class _Piece:
    """A span being repaired in place: ``phone`` over samples [start, end)."""

    phone: str
    start: int
    end: int


def clean_spans(
    raw: list[Span], samples: np.ndarray, sample_rate: int, end_sample: int | None = None
) -> list[Span]:
    """Normalise, repair and check eSpeak's ``(name, start, end)`` phone spans.

    ``end_sample`` is where eSpeak's END event says speech ends: voices with an echo go on
    after it (up to ``MAX_ECHO_S``), and only silence may be there. Raises
    ``AlignmentIssue`` when the events do not cover the audio, go backwards, name a phone
    outside ``PHONES``, leave a non-silent phone with no duration, or disagree with the END.
    """
    n = len(samples)
    if not raw or raw[0][1] != 0 or raw[-1][2] != n:
        raise AlignmentIssue(f"phone events do not cover the audio (0..{n})")
    if end_sample is not None and not n - MAX_ECHO_S * sample_rate <= end_sample <= n:
        raise AlignmentIssue(f"eSpeak's end event ({end_sample}) disagrees with the audio ({n})")
    pieces = [_Piece(normalize_phone(name), start, end) for name, start, end in raw]
    backwards = any(piece.end < piece.start for piece in pieces)
    if backwards or any(cur.start != prev.end for prev, cur in pairwise(pieces)):
        raise AlignmentIssue("phone events are not contiguous and increasing")
    unknown = sorted({piece.phone for piece in pieces} - _KNOWN)
    if unknown:
        raise AlignmentIssue(f"phone(s) outside the inventory: {' '.join(unknown)}")
    _fold_zero_length(pieces)
    pieces = [piece for piece in pieces if piece.end > piece.start]
    if end_sample is not None and any(
        piece.phone != SIL and piece.end > end_sample for piece in pieces
    ):
        raise AlignmentIssue(f"a phone runs past eSpeak's end event ({end_sample})")
    _move_closures(pieces, samples, sample_rate)
    merged: list[_Piece] = []
    for piece in pieces:
        if merged and piece.phone == SIL and merged[-1].phone == SIL:
            merged[-1].end = piece.end
        else:
            merged.append(piece)
    return [(piece.phone, piece.start, piece.end) for piece in merged]


def _fold_zero_length(pieces: list[_Piece]) -> None:
    """Give each zero-length phone the last ``FOLD_SHARE`` of the phone before it."""
    for i, piece in enumerate(pieces):
        if piece.phone == SIL or piece.end > piece.start:
            continue
        prev = pieces[i - 1] if i > 0 else None
        if prev is None or prev.phone == SIL or prev.end - prev.start < 2:
            raise AlignmentIssue(f"phone {piece.phone!r} has no duration")
        cut = prev.end - max(1, round(FOLD_SHARE * (prev.end - prev.start)))
        piece.start = cut
        prev.end = cut


def _move_closures(pieces: list[_Piece], samples: np.ndarray, sample_rate: int) -> None:
    """Move the near-silent tail of a phone into the stop that follows it."""
    x = samples.astype(np.float32)
    frames = x[: len(x) // QUIET_WINDOW * QUIET_WINDOW].reshape(-1, QUIET_WINDOW)
    rms = np.sqrt(np.mean(frames * frames, axis=1))  # (S // QUIET_WINDOW,)
    loud = float(np.quantile(rms, 0.95)) if len(rms) else 0.0
    threshold = max(QUIET_FLOOR, QUIET_REL * loud)
    max_len = int(MAX_CLOSURE_S * sample_rate)
    for prev, cur in pairwise(pieces):
        if cur.phone not in STOPS or prev.phone == SIL:
            continue
        start, end = prev.start, prev.end
        limit = start + max(int(KEEP_SHARE * (end - start)), QUIET_WINDOW)  # keeps >= this
        cut = end
        while cut - QUIET_WINDOW >= limit and end - cut < max_len:
            window = x[cut - QUIET_WINDOW : cut]
            if float(np.sqrt(np.mean(window * window))) >= threshold:
                break
            cut -= QUIET_WINDOW
        if cut < end:
            prev.end = cut
            cur.start = cut


def rescale(spans: list[Span], num_samples: int, ratio: float) -> list[Span]:
    """Spans in another sample rate (``ratio`` = new/old), ending exactly at ``num_samples``.

    A pause that shrinks to nothing at the new rate is dropped; a phone that does raises
    ``AlignmentIssue``.
    """
    out: list[_Piece] = []
    for phone, _, end in spans:
        new_start = out[-1].end if out else 0
        new_end = num_samples if end == spans[-1][2] else min(round(end * ratio), num_samples)
        if new_end > new_start:
            out.append(_Piece(phone, new_start, new_end))
        elif phone != SIL:
            raise AlignmentIssue(f"phone {phone!r} vanishes at the output sample rate")
    if not out:
        raise AlignmentIssue("utterance has no audio")
    out[0].start = 0
    out[-1].end = num_samples
    return [(piece.phone, piece.start, piece.end) for piece in out]
