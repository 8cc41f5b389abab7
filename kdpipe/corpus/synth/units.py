"""Frame labels from phone spans: phones, sub-phone states, or tied triphone states.

- ``phones``: the phone active at each frame centre (``PHONES``, sil included);
- ``states``: each phone split into ``STATES`` equal thirds of its duration, ``a_1 a_2 a_3``
  (sil too);
- ``cd``: triphone states ``L-P+R_k`` counted in frames on the train split; the most
  frequent ones (at least ``min_frames``) become classes of their own up to ``num_states``
  labels in all, and every other triphone state backs off to its monophone state ``P_k``
  (always in the set, so unseen contexts in dev/test have a label). Silence stays
  context-independent, as in hybrid ASR systems.

Shapes: spans are ``(phone, start, end)`` in samples at ``FbankConfig.sample_rate``,
contiguous; one unit per frame, T = ``FbankConfig.num_frames(S)``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.synth.phonemes import PHONES, SIL

Units = Literal["phones", "states", "cd"]
UNITS = ("phones", "states", "cd")
STATES = 3  # begin / middle / end third of each phone, as in 3-state HMMs

Unit = tuple[str, str, str, int]  # (left phone, phone, right phone, state 1..STATES)


def state_name(phone: str, state: int) -> str:
    return f"{phone}_{state}"


def triphone_name(unit: Unit) -> str:
    left, phone, right, state = unit
    return f"{left}-{phone}+{right}_{state}"


def monophone_labels(units: Units) -> list[str]:
    """The labels every set of ``units`` holds: phones, or all phones' states."""
    if units == "phones":
        return list(PHONES)
    return [state_name(p, k) for p in PHONES for k in range(1, STATES + 1)]


def frame_units(
    spans: Sequence[tuple[str, int, int]], num_frames: int, fbank: FbankConfig
) -> list[Unit]:
    """The (left, phone, right, state) active at the centre of each of ``num_frames`` frames."""
    starts = [start for _, start, _ in spans]
    out: list[Unit] = []
    for i in range(num_frames):
        centre = fbank.frame_center(i) * fbank.sample_rate
        j = max(0, min(bisect_right(starts, centre) - 1, len(spans) - 1))
        phone, start, end = spans[j]
        state = min(STATES, 1 + int(STATES * (centre - start) / max(end - start, 1)))
        left = spans[j - 1][0] if j > 0 else SIL
        right = spans[j + 1][0] if j + 1 < len(spans) else SIL
        out.append((left, phone, right, max(1, state)))
    return out


def tie_triphones(counts: Counter[Unit], num_states: int, min_frames: int) -> list[str]:
    """The ``cd`` label set: monophone states, then the most frequent triphone states.

    ``counts`` are frames per triphone state on the train split. Fewer than ``num_states``
    labels come back when too few triphone states reach ``min_frames``.
    """
    base = monophone_labels("states")
    budget = max(0, num_states - len(base))
    ranked = sorted(
        (
            (frames, triphone_name(unit))
            for unit, frames in counts.items()
            if unit[1] != SIL and frames >= min_frames
        ),
        key=lambda item: (-item[0], item[1]),
    )
    return base + [name for _, name in ranked[:budget]]


def label_frames(units: Iterable[Unit], kind: Units, cd_labels: frozenset[str]) -> list[str]:
    """Label names for per-frame units (``cd_labels``: the cd label set, else unused)."""
    if kind == "phones":
        return [phone for _, phone, _, _ in units]
    if kind == "states":
        return [state_name(phone, state) for _, phone, _, state in units]
    out = []
    for unit in units:
        _, phone, _, state = unit
        name = triphone_name(unit) if phone != SIL else ""
        out.append(name if name in cd_labels else state_name(phone, state))
    return out
