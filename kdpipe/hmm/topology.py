"""HMM topologies in Kaldi's text format, as ``utils/gen_topo.pl`` writes them.

Non-silence phones: ``num_states`` (3) emitting states left to right, each with a self-loop
(0.75) and a forward transition (0.25), then a non-emitting final state; a phone lasts at
least ``num_states`` frames. Silence phones: ``num_silence_states`` (5) emitting states,
the first reaching every state but the last, the middle ones fully connected, the last
leaving to the final state (Kaldi's silence topology: silence can be long and varied).
The transition probabilities are only starting values; training re-estimates them.
"""

from __future__ import annotations

import kaldi_hmm_gmm as khg

from kdpipe.errors import ConfigError


def topology_text(
    nonsilence: list[int], silence: list[int], num_states: int = 3, num_silence_states: int = 5
) -> str:
    """The ``<Topology>`` text for phone ids ``nonsilence`` and ``silence`` (both non-empty
    and disjoint; ids >= 1, 0 is epsilon)."""
    if (
        not nonsilence
        or not silence
        or set(nonsilence) & set(silence)
        or min(nonsilence + silence) < 1
    ):
        raise ConfigError(
            "topology: need disjoint non-empty silence and non-silence phone ids >= 1"
        )
    if num_states < 1 or num_silence_states < 1:
        raise ConfigError("topology: phones need at least one emitting state")
    out = ["<Topology>", _left_to_right(nonsilence, num_states)]
    out.append(_silence(silence, num_silence_states))
    out.append("</Topology>")
    return "\n".join(out) + "\n"


def _left_to_right(phones: list[int], n: int) -> str:
    states = [
        f"<State> {i} <PdfClass> {i} <Transition> {i} 0.75 <Transition> {i + 1} 0.25 </State>"
        for i in range(n)
    ]
    return _entry(phones, [*states, f"<State> {n} </State>"])


def _silence(phones: list[int], n: int) -> str:
    if n == 1:
        return _left_to_right(phones, 1)
    p = 1.0 / (n - 1)
    first = "".join(f"<Transition> {k} {p} " for k in range(n - 1))
    middle = "".join(f"<Transition> {k} {p} " for k in range(1, n))
    states = [f"<State> 0 <PdfClass> 0 {first}</State>"]
    states += [f"<State> {i} <PdfClass> {i} {middle}</State>" for i in range(1, n - 1)]
    states.append(
        f"<State> {n - 1} <PdfClass> {n - 1} <Transition> {n - 1} 0.75 "
        f"<Transition> {n} 0.25 </State>"
    )
    return _entry(phones, [*states, f"<State> {n} </State>"])


def _entry(phones: list[int], states: list[str]) -> str:
    ids = " ".join(map(str, sorted(phones)))
    return "\n".join(
        ["<TopologyEntry>", f"<ForPhones> {ids} </ForPhones>", *states, "</TopologyEntry>"]
    )


def read_topology(text: str) -> khg.HmmTopology:
    """A ``khg.HmmTopology`` of Kaldi ``<Topology>`` text (e.g. ``topology_text``'s)."""
    topo = khg.HmmTopology()
    topo.read(text)
    return topo
