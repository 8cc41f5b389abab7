"""Split subsets: ``train[:10%]``, ``train[10%:]``, ``train[30%:60%]``.

Wherever a split name is taken (``FeatureStore.indices`` and everything built on it), a
spec ``NAME[A%:B%]`` (either bound optional, decimals allowed) names part of split NAME:
its N utterances ordered by sha256 of the utterance id, then positions
``round(A/100 * N)`` to ``round(B/100 * N)`` of that order, returned in store order.
The order depends on the ids alone (no seed, not the store order), so subsets are
nested (``[:10%]`` is inside ``[:30%]``), complementary (``[:10%]`` and ``[10%:]`` split
the split in two) and the same in every store holding the same utterances.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

import numpy as np

from kdpipe.errors import CorpusError

SYNTAX = "NAME or NAME[A%:B%] with 0 <= A < B <= 100, either bound optional (e.g. train[:10%])"
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_SPEC = re.compile(rf"(?P<name>[^\[\]%:]+)\[(?:(?P<lo>{_NUM})%)?:(?:(?P<hi>{_NUM})%)?\]")


def parse_split(spec: str) -> tuple[str, float, float]:
    """``"train[10%:30%]"`` -> ``("train", 0.1, 0.3)``; a plain name -> ``(name, 0.0, 1.0)``.

    ``CorpusError`` naming the spec and the syntax for anything else.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise CorpusError(f"split {spec!r}: expected {SYNTAX}")
    if not any(c in spec for c in "[]%"):
        return spec, 0.0, 1.0
    m = _SPEC.fullmatch(spec)
    if m is None:
        raise CorpusError(f"split {spec!r}: expected {SYNTAX}")
    lo = float(m["lo"]) / 100 if m["lo"] is not None else 0.0
    hi = float(m["hi"]) / 100 if m["hi"] is not None else 1.0
    if not 0.0 <= lo < hi <= 1.0:
        raise CorpusError(f"split {spec!r}: bounds out of order or range; expected {SYNTAX}")
    return m["name"], lo, hi


def subset(ids: Sequence[str], index: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """The part [lo, hi) (fractions) of the utterances ``index`` (int indices into the
    store-wide ``ids``), by sha256 of their ids; sorted int64 indices (maybe empty)."""
    index = np.asarray(index, dtype=np.int64)  # (N,)
    if lo <= 0.0 and hi >= 1.0:
        return np.sort(index)
    keys = [hashlib.sha256(ids[i].encode()).digest() for i in index.tolist()]
    order = sorted(range(len(index)), key=lambda j: (keys[j], ids[int(index[j])]))
    n = len(index)
    first, stop = round(lo * n), round(hi * n)
    return np.sort(index[np.asarray(order[first:stop], dtype=np.int64)])


def unknown_split(where: str, spec: str, counts: Mapping[str, int]) -> CorpusError:
    """The error for a split (or the base of a subset spec) that a store does not have."""
    known = ", ".join(f"{k} ({v})" for k, v in counts.items())
    return CorpusError(
        f"{where}: split {spec!r} is empty or unknown; known splits: {known}; a split is {SYNTAX}"
    )
