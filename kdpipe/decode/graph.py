"""What every decoding graph is: an FST over a model's labels, and the HMM of each phone.

Symbols: an arc's input symbol is a label index + 1 (0 is epsilon; column j of
``kaldi_hmm_gmm.DecodableCtc`` scores symbol j + 1); its output symbol i + 1 names
``DecodingGraph.symbols[i]`` (a phone of the phone loop, a word of the word graph).

Each label is state k of a phone (``kdpipe.metrics.unit_state``: ``a`` -> (a, 1), ``a_2``
-> (a, 2), ``l-a+r_2`` -> (a, 2), an aligned tied state ``a_2_5`` -> (a, 2)). A phone's
HMM (``phone_hmms``) is its states in order; each state loops on its labels (several labels
of one state, contexts or tied states, are alternatives) and moves on to the next state's
labels. Transitions inside a phone are free: next to the acoustic scores they matter
little, and the acoustic scale is swept anyway. Tied triphone states enter the graph
context-free: any leaf of a phone's state k may stand for state k, whatever the
neighbours (Kaldi's HCLG would allow only the leaf the tree gives that context).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from kdpipe.metrics import unit_state

Unit = Literal["phone", "word"]


@dataclass(frozen=True)
class DecodingGraph:
    """A graph, what its output symbols name, and which of them scoring ignores."""

    fst: object  # kaldifst.StdVectorFst
    symbols: tuple[str, ...]  # output symbol i + 1 is symbols[i]
    unit: Unit
    ignored: frozenset[str] = frozenset()  # silence phones: dropped before scoring
    kind: str = ""  # how it was built, for reports: "phone loop", "HCLG (alignment tree)"...

    def tokens(self, outputs: Sequence[int]) -> list[str]:
        """The scored tokens of a best path's output symbols minus 1 (``Hypothesis``)."""
        names = (self.symbols[s] for s in outputs)
        return [name for name in names if name not in self.ignored]


def phone_hmms(labels: Sequence[str]) -> dict[str, list[list[int]]]:
    """Each phone of a label set (sorted) -> its states in order, each the input symbols
    (label + 1) that stand for it."""
    units = [unit_state(name) for name in labels]
    by_phone: dict[str, dict[int, list[int]]] = {}
    for label, (phone, state) in enumerate(units):
        by_phone.setdefault(phone, {}).setdefault(state, []).append(label + 1)
    return {
        phone: [states[k] for k in sorted(states)] for phone, states in sorted(by_phone.items())
    }


def add_hmm(
    fst: object, src: int, dst: int, hmm: list[list[int]], output: int, cost: float
) -> None:
    """Arcs from ``src`` through the states of ``hmm`` to ``dst``: the first label arc
    carries ``output`` and ``cost``, the last state leaves by an epsilon."""
    import kaldifst  # a compiled extension: loaded when a graph is built

    states = [fst.add_state() for _ in hmm]  # type: ignore[attr-defined]
    for symbol in hmm[0]:
        fst.add_arc(src, kaldifst.StdArc(symbol, output, cost, states[0]))  # type: ignore[attr-defined]
    for k, state in enumerate(states):
        for symbol in hmm[k]:
            fst.add_arc(state, kaldifst.StdArc(symbol, 0, 0.0, state))  # type: ignore[attr-defined]
        if k + 1 < len(states):
            for symbol in hmm[k + 1]:
                fst.add_arc(state, kaldifst.StdArc(symbol, 0, 0.0, states[k + 1]))  # type: ignore[attr-defined]
    fst.add_arc(states[-1], kaldifst.StdArc(0, 0, 0.0, dst))  # type: ignore[attr-defined]


def expand_phones(fst: object, hmm_of: Callable[[int], list[list[int]] | None]) -> object:
    """H o ``fst`` for an ``fst`` over phone symbols: every arc whose input symbol ``hmm_of``
    maps to an HMM becomes that HMM's states (``add_hmm``), every other arc (epsilons,
    disambiguation symbols) an epsilon arc; outputs, weights and final weights kept."""
    import kaldifst

    out = copy_states(fst)
    for state in kaldifst.StateIterator(fst):
        for arc in kaldifst.ArcIterator(fst, state):
            hmm = hmm_of(arc.ilabel) if arc.ilabel else None
            if hmm is None:
                out.add_arc(state, kaldifst.StdArc(0, arc.olabel, arc.weight.value, arc.nextstate))
            else:
                add_hmm(out, state, arc.nextstate, hmm, arc.olabel, arc.weight.value)
    return out


def copy_states(fst: Any) -> Any:
    """A new FST with ``fst``'s states, start and final weights, and no arcs yet."""
    import kaldifst

    out = kaldifst.StdVectorFst()
    for _ in kaldifst.StateIterator(fst):
        out.add_state()
    out.start = fst.start
    for state in kaldifst.StateIterator(fst):
        final = fst.final(state).value
        if final != float("inf"):
            out.set_final(state, final)
    return out
