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

from itertools import pairwise
from typing import TYPE_CHECKING

from kdpipe.corpus.synth.phonemes import PHONES, SIL, STOPS, normalize_phone
from kdpipe.errors import SynthError

if TYPE_CHECKING:
    import numpy as np

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
    spans = [[normalize_phone(name), s, e] for name, s, e in raw]
    if any(e < s for _, s, e in spans) or any(b[1] != a[2] for a, b in pairwise(spans)):
        raise AlignmentIssue("phone events are not contiguous and increasing")
    unknown = sorted({p for p, _, _ in spans} - _KNOWN)
    if unknown:
        raise AlignmentIssue(f"phone(s) outside the inventory: {' '.join(unknown)}")
    _fold_zero_length(spans)
    spans = [s for s in spans if s[2] > s[1]]
    if end_sample is not None and any(p != SIL and e > end_sample for p, _, e in spans):
        raise AlignmentIssue(f"a phone runs past eSpeak's end event ({end_sample})")
    _move_closures(spans, samples, sample_rate)
    merged: list[list] = []
    for span in spans:
        if merged and span[0] == SIL and merged[-1][0] == SIL:
            merged[-1][2] = span[2]
        else:
            merged.append(span)
    return [(p, s, e) for p, s, e in merged]


def _fold_zero_length(spans: list[list]) -> None:
    """Give each zero-length phone the last ``FOLD_SHARE`` of the phone before it."""
    for i, (phone, s, e) in enumerate(spans):
        if phone == SIL or e > s:
            continue
        prev = spans[i - 1] if i > 0 else None
        if prev is None or prev[0] == SIL or prev[2] - prev[1] < 2:
            raise AlignmentIssue(f"phone {phone!r} has no duration")
        cut = prev[2] - max(1, round(FOLD_SHARE * (prev[2] - prev[1])))
        spans[i][1] = cut
        prev[2] = cut


def _move_closures(spans: list[list], samples: np.ndarray, sample_rate: int) -> None:
    """Move the near-silent tail of a phone into the stop that follows it."""
    import numpy as np

    x = samples.astype(np.float32)
    frames = x[: len(x) // QUIET_WINDOW * QUIET_WINDOW].reshape(-1, QUIET_WINDOW)
    rms = np.sqrt(np.mean(frames * frames, axis=1))  # (S // QUIET_WINDOW,)
    loud = float(np.quantile(rms, 0.95)) if len(rms) else 0.0
    threshold = max(QUIET_FLOOR, QUIET_REL * loud)
    max_len = int(MAX_CLOSURE_S * sample_rate)
    for prev, cur in pairwise(spans):
        if cur[0] not in STOPS or prev[0] == SIL:
            continue
        start, end = prev[1], prev[2]
        limit = start + max(int(KEEP_SHARE * (end - start)), QUIET_WINDOW)  # keeps >= this
        cut = end
        while cut - QUIET_WINDOW >= limit and end - cut < max_len:
            w = x[cut - QUIET_WINDOW : cut]
            if float(np.sqrt(np.mean(w * w))) >= threshold:
                break
            cut -= QUIET_WINDOW
        if cut < end:
            prev[2] = cut
            cur[1] = cut


def rescale(spans: list[Span], num_samples: int, ratio: float) -> list[Span]:
    """Spans in another sample rate (``ratio`` = new/old), ending exactly at ``num_samples``.

    A pause that shrinks to nothing at the new rate is dropped; a phone that does raises
    ``AlignmentIssue``.
    """
    out: list[list] = []
    for phone, _, e in spans:
        ns = out[-1][2] if out else 0
        ne = num_samples if e == spans[-1][2] else min(round(e * ratio), num_samples)
        if ne > ns:
            out.append([phone, ns, ne])
        elif phone != SIL:
            raise AlignmentIssue(f"phone {phone!r} vanishes at the output sample rate")
    if not out:
        raise AlignmentIssue("utterance has no audio")
    out[0][1] = 0
    out[-1][2] = num_samples
    return [(p, s, e) for p, s, e in out]
