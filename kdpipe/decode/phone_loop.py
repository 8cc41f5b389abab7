"""A phone loop over a frame model's label units, as a kaldifst decoding graph.

The symbols and phone HMMs are ``kdpipe.decode.graph``'s. Leaving a phone's last state
returns to that phone's history state, from which entering phone q (an epsilon arc that
outputs q) costs ``lm_weight * -log P(q | p)``: a phone bigram estimated from the training
labels with add-one smoothing (``phone_bigram``). Every history state is final. The HMM of
each phone is built once and shared by every history (a minimal graph).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from kdpipe.decode.graph import DecodingGraph, add_hmm, phone_hmms
from kdpipe.errors import ConfigError
from kdpipe.metrics import SILENCE, unit_state


def label_phones(labels: Sequence[str]) -> tuple[tuple[str, ...], np.ndarray]:
    """The phones of a label set (sorted) and each label's phone index, (C,)."""
    units = [unit_state(name) for name in labels]
    phones = tuple(sorted({phone for phone, _ in units}))
    index = {phone: i for i, phone in enumerate(phones)}
    return phones, np.array([index[phone] for phone, _ in units], dtype=np.int64)


def phone_sequences(
    label_sequences: Iterable[np.ndarray], label_phone: np.ndarray
) -> list[list[int]]:
    """Each frame-label sequence as its phone sequence: labels mapped to phones, runs of
    one phone merged."""
    out = []
    for labels in label_sequences:
        phones = label_phone[np.asarray(labels, dtype=np.int64)]
        keep = np.ones(len(phones), dtype=bool)
        keep[1:] = phones[1:] != phones[:-1]
        out.append(phones[keep].tolist())
    return out


def phone_bigram(sequences: Iterable[Sequence[int]], num_phones: int) -> np.ndarray:
    """(P + 1, P) -log P(q | p), add-one smoothed; row P is the utterance start."""
    counts = np.ones((num_phones + 1, num_phones), dtype=np.float64)  # add-one
    for seq in sequences:
        previous = num_phones
        for phone in seq:
            counts[previous, phone] += 1
            previous = phone
    return -np.log(counts / counts.sum(axis=1, keepdims=True))


def build_phone_loop(
    labels: Sequence[str], bigram: np.ndarray | None = None, lm_weight: float = 1.0
) -> DecodingGraph:
    """The phone-loop graph over ``labels`` (a model's label set, index order); ``bigram``
    from ``phone_bigram`` (None: every phone equally likely)."""
    import kaldifst  # a compiled extension: loaded when a graph is built

    hmms = phone_hmms(labels)
    phones = tuple(hmms)
    p = len(phones)
    if bigram is None:
        bigram = np.full((p + 1, p), np.log(p))
    if bigram.shape != (p + 1, p):
        raise ConfigError(f"phone bigram of shape {bigram.shape}; {p} phones need ({p + 1}, {p})")
    fst = kaldifst.StdVectorFst()
    history = [fst.add_state() for _ in range(p + 1)]  # after phone i; [p]: the start
    entry = [fst.add_state() for _ in range(p)]  # phone q begins
    fst.start = history[p]
    for h in history:
        fst.set_final(h, 0.0)
    for q, phone in enumerate(phones):
        for h in range(p + 1):  # enter phone q from every history, emitting it
            cost = float(lm_weight * bigram[h, q])
            fst.add_arc(history[h], kaldifst.StdArc(0, q + 1, cost, entry[q]))
        add_hmm(fst, entry[q], history[q], hmms[phone], 0, 0.0)
    ignored = frozenset(phone for phone in phones if phone in SILENCE)
    return DecodingGraph(fst, phones, "phone", ignored, "phone loop, phone bigram")
