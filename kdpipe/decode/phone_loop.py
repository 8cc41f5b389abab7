"""A phone loop over a frame model's label units, as a kaldifst decoding graph.

Symbols: an arc's input symbol is a label index + 1 (0 is epsilon; column j of
``kaldi_hmm_gmm.DecodableCtc`` scores symbol j + 1); its output symbol is a phone index + 1
in ``PhoneLoop.phones`` (silence included; scoring drops it), on the arc that enters the
phone.

Each label is state k of a phone (``kdpipe.metrics.unit_state``: ``a`` -> (a, 1), ``a_2``
-> (a, 2), ``l-a+r_2`` -> (a, 2), an aligned tied state ``a_2_5`` -> (a, 2)). A phone's
HMM is its states in order; each state loops on its labels (several labels of one state,
contexts or tied states, are alternatives) and moves on to the next state's labels.
Leaving the last state returns to that phone's history state, from which entering phone q
costs ``lm_weight * -log P(q | p)``: a phone bigram estimated from the training labels
with add-one smoothing (``phone_bigram``). Every history state is final. Transition
probabilities inside a phone are 0 (free): next to the acoustic scores they matter little,
and the acoustic scale is swept anyway.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.metrics import unit_state


@dataclass(frozen=True)
class PhoneLoop:
    """The graph and the symbol maps it was built with."""

    fst: object  # kaldifst.StdVectorFst
    phones: tuple[str, ...]  # output symbol i + 1 is phones[i]
    label_phone: np.ndarray  # (C,) phone index of each label


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
) -> PhoneLoop:
    """The phone-loop graph over ``labels`` (a model's label set, index order); ``bigram``
    from ``phone_bigram`` (None: every phone equally likely)."""
    import kaldifst  # a compiled extension: loaded when a graph is built

    units = [unit_state(name) for name in labels]
    phones, label_phone = label_phones(labels)
    p = len(phones)
    if bigram is None:
        bigram = np.full((p + 1, p), np.log(p))
    if bigram.shape != (p + 1, p):
        raise ConfigError(f"phone bigram of shape {bigram.shape}; {p} phones need ({p + 1}, {p})")
    # per phone: its states in order, each with its labels (input symbols)
    states: list[list[list[int]]] = []
    for phone in phones:
        by_state: dict[int, list[int]] = {}
        for label, (name, state) in enumerate(units):
            if name == phone:
                by_state.setdefault(state, []).append(label + 1)
        states.append([by_state[k] for k in sorted(by_state)])
    fst = kaldifst.StdVectorFst()
    history = [fst.add_state() for _ in range(p + 1)]  # after phone i; [p]: the start
    fst.start = history[p]
    for h in history[:p]:
        fst.set_final(h, 0.0)
    fst.set_final(history[p], 0.0)
    for q, hmm in enumerate(states):
        hmm_states = [fst.add_state() for _ in hmm]
        for h in range(p + 1):  # enter phone q from every history, emitting it
            cost = float(lm_weight * bigram[h, q])
            for symbol in hmm[0]:
                fst.add_arc(history[h], kaldifst.StdArc(symbol, q + 1, cost, hmm_states[0]))
        for k, state in enumerate(hmm_states):
            for symbol in hmm[k]:
                fst.add_arc(state, kaldifst.StdArc(symbol, 0, 0.0, state))  # stay
            if k + 1 < len(hmm_states):
                for symbol in hmm[k + 1]:
                    fst.add_arc(state, kaldifst.StdArc(symbol, 0, 0.0, hmm_states[k + 1]))
        fst.add_arc(hmm_states[-1], kaldifst.StdArc(0, 0, 0.0, history[q]))  # phone done
    return PhoneLoop(fst, phones, label_phone)
