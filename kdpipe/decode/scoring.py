"""Decoded phone error rate: a split's posteriors through the phone loop, scored against
the reference phones with kaldialign (``kdpipe.metrics``).

Legend: N utterances, T_i output frames, C labels. The reference of an utterance is its
frame labels mapped to phones with runs merged; silence (``metrics.SILENCE``) is dropped
from reference and hypothesis alike, as PER is usually reported. The priors and the phone
bigram come from the corpus' training labels (what the model learnt from), so nothing of
the scored split leaks into the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.priors import label_priors
from kdpipe.decode.hybrid import SCALES, DecodeOptions, decode_scores, pseudo_loglik
from kdpipe.decode.phone_loop import (
    PhoneLoop,
    build_phone_loop,
    label_phones,
    phone_bigram,
    phone_sequences,
)
from kdpipe.errors import ConfigError
from kdpipe.metrics import SILENCE, ErrorCounts, error_counts


@dataclass
class DecodedPer:
    """Decoded phone errors of a split."""

    counts: ErrorCounts
    utterances: int
    not_final: int  # utterances whose search lost every final state: all deletions
    acoustic_scale: float
    hypotheses: dict[str, list[str]] = field(default_factory=dict)  # id -> phones
    sweep: dict[str, float] = field(default_factory=dict)  # scale -> PER on the tuning split
    tuned_on: str | None = None  # the split the scale was picked on; None: given

    @property
    def per(self) -> float:
        return self.counts.rate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"per": self.per, **self.counts.to_dict()}
        out.update(utterances=self.utterances, not_final=self.not_final)
        out["acoustic_scale"] = self.acoustic_scale
        if self.tuned_on is not None:
            out.update(tuned_on=self.tuned_on, sweep=self.sweep)
        return out


def training_graph(
    store: FeatureStore, split: str = "train", lm_weight: float = 1.0
) -> tuple[PhoneLoop, np.ndarray]:
    """The phone loop over the store's labels with a phone bigram of ``split``'s labels,
    and the (C,) log priors of those labels."""
    labels = list(store.labels.names)
    index = store.indices(split)
    if not len(index):
        raise ConfigError(f"{store.location}: no {split!r} utterances to count priors on")
    phones, label_phone = label_phones(labels)
    sequences = phone_sequences((store.frame_labels(int(i)) for i in index), label_phone)
    bigram = phone_bigram(sequences, len(phones))
    return build_phone_loop(labels, bigram, lm_weight), np.log(label_priors(store, split))


def decoded_per(
    loop: PhoneLoop,
    log_prior: np.ndarray,
    logps: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    ids: Sequence[str],
    opts: DecodeOptions,
) -> DecodedPer:
    """Decode each utterance's (T_i, C) log-posteriors at ``opts.acoustic_scale`` (which
    must be set) and count the phone errors against its (T_i,) reference labels (silence
    dropped from both)."""
    if opts.acoustic_scale is None:
        raise ConfigError("decode: decoded_per needs an acoustic scale (tune_scale picks one)")
    silent = {i for i, phone in enumerate(loop.phones) if phone in SILENCE}
    total, not_final, hyps = ErrorCounts(), 0, {}
    for utt_id, logp, ref in zip(ids, logps, refs, strict=True):
        hyp = decode_scores(loop.fst, pseudo_loglik(logp, log_prior, opts.acoustic_scale), opts)
        not_final += not hyp.reached_final
        # an utterance the beam could not finish is counted as all deletions, never dropped
        hyp_phones = [p for p in hyp.symbols if p not in silent] if hyp.reached_final else []
        ref_phones = [p for p in phone_sequences([ref], loop.label_phone)[0] if p not in silent]
        total = total + error_counts(ref_phones, hyp_phones)
        hyps[utt_id] = [loop.phones[p] for p in hyp_phones]
    return DecodedPer(total, len(ids), not_final, opts.acoustic_scale, hyps)


def tune_scale(
    loop: PhoneLoop,
    log_prior: np.ndarray,
    logps: Sequence[np.ndarray],
    refs: Sequence[np.ndarray],
    ids: Sequence[str],
    opts: DecodeOptions,
    scales: Sequence[float] = SCALES,
) -> tuple[float, dict[str, float]]:
    """The acoustic scale of ``scales`` with the lowest decoded PER on the given (tuning)
    utterances, and every scale's PER (Kaldi's scoring picks its LM weight so, on dev)."""
    sweep = {}
    for scale in scales:
        result = decoded_per(loop, log_prior, logps, refs, ids, replace(opts, acoustic_scale=scale))
        sweep[f"{scale:g}"] = result.per
    best = min(scales, key=lambda scale: (sweep[f"{scale:g}"], scale))
    return float(best), sweep
