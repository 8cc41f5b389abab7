"""Hybrid decoding: a frame model's log-posteriors through a decoding graph.

Legend: T frames, C classes (labels). The scores a decoder adds up are Kaldi's pseudo
log-likelihoods, ``acoustic_scale * (log p(c | x_t) - log p(c))``: the posterior divided
by the label's prior (``kdpipe.corpus.priors``), so that the graph's language model, not
the training data's label frequencies, supplies the prior. Kaldi's ``FasterDecoder``
(beam search over the graph, kaldi-hmm-gmm's binding, the one whose FSTs kaldifst 1.7
shares) finds the best path; its output symbols are the hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kdpipe.errors import ConfigError

SCALES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)  # the sweep of acoustic scales (Kaldi's
# scoring sweeps LM weights 7..17 against acwt 1, i.e. acoustic scales 1/17..1/7, and more)
PATIENCE = 2  # the sweep stops after this many scales in a row worse than its best


@dataclass(frozen=True)
class DecodeOptions:
    """Search settings; beam and max-active are Kaldi's defaults for nnet decoding."""

    acoustic_scale: float | None = None  # None: the best of SCALES on the dev split
    beam: float = 13.0  # Kaldi's decode beam
    max_active: int = 7000  # Kaldi's --max-active

    def __post_init__(self) -> None:
        scale = self.acoustic_scale
        if (scale is not None and not scale > 0) or not self.beam > 0 or self.max_active < 1:
            raise ConfigError("decode: acoustic_scale and beam must be > 0, max_active >= 1")


def pseudo_loglik(logp: np.ndarray, log_prior: np.ndarray, scale: float) -> np.ndarray:
    """(T, C) float32 ``scale * (logp - log_prior)``: what the decoder scores frames with."""
    if logp.ndim != 2 or log_prior.shape != (logp.shape[1],):
        raise ConfigError(
            f"decode: {logp.shape[1] if logp.ndim == 2 else '?'} classes of posteriors but "
            f"{log_prior.shape[0]} priors"
        )
    return np.ascontiguousarray(scale * (logp - log_prior[None, :]), dtype=np.float32)


@dataclass(frozen=True)
class Hypothesis:
    """One utterance's best path."""

    symbols: list[int]  # output symbols minus 1 (e.g. phone indices), in order
    reached_final: bool  # False: the beam lost every final state (Kaldi warns)
    cost: float  # the path's total cost (graph + acoustic), lower is better


def decode_scores(fst: object, scores: np.ndarray, opts: DecodeOptions) -> Hypothesis:
    """The best path of ``scores`` (T, C) (already scaled) through ``fst``: its output
    symbols. An utterance the beam cannot finish gives its best partial path; an empty
    one (no frames) the empty hypothesis."""
    import kaldi_hmm_gmm as khg  # compiled extensions: loaded when decoding
    import kaldifst

    if len(scores) == 0:
        return Hypothesis([], True, 0.0)
    config = khg.FasterDecoderOptions(beam=opts.beam, max_active=opts.max_active)
    decoder = khg.FasterDecoder(fst, config)
    decoder.decode(khg.DecodableCtc(np.ascontiguousarray(scores, dtype=np.float32)))
    reached = bool(decoder.reached_final())
    ok, lattice = decoder.get_best_path()
    if not ok:
        return Hypothesis([], reached, float("inf"))
    _, _, outputs, weight = kaldifst.get_linear_symbol_sequence(lattice)
    cost = float(weight.value1 + weight.value2) if hasattr(weight, "value1") else float("nan")
    return Hypothesis([s - 1 for s in outputs if s > 0], reached, cost)
