"""Decoded error rates: a split's posteriors through a decoding graph, scored against
reference tokens with kaldialign (``kdpipe.metrics``).

Legend: N utterances, T_i output frames, C labels. A phone reference is the utterance's
frame labels mapped to phones with runs merged; a word reference its transcript. Silence
(``metrics.SILENCE``) is dropped from phone references and hypotheses alike, as PER is
usually reported. Priors, the phone bigram and the word LM come from the corpus'
training split (what the model learnt from), so nothing of the scored split leaks into
the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.lexicon import Lexicon
from kdpipe.corpus.priors import label_priors
from kdpipe.decode.graph import DecodingGraph, Unit
from kdpipe.decode.hybrid import PATIENCE, SCALES, DecodeOptions
from kdpipe.decode.jobs import Decoder
from kdpipe.decode.phone_loop import build_phone_loop, label_phones, phone_bigram, phone_sequences
from kdpipe.decode.word_graph import build_word_graph
from kdpipe.errors import ConfigError
from kdpipe.metrics import SILENCE, ErrorCounts, error_counts

if TYPE_CHECKING:
    from kdpipe.hmm.model import GmmHmm

RATE_NAMES = {"phone": "PER", "word": "WER"}


@dataclass
class Decoded:
    """Decoded errors of a split, in phones or words."""

    unit: Unit
    counts: ErrorCounts
    utterances: int
    not_final: int  # utterances whose search lost every final state: all deletions
    acoustic_scale: float
    hypotheses: dict[str, list[str]] = field(default_factory=dict)  # id -> tokens
    sweep: dict[str, float] = field(default_factory=dict)  # scale -> rate on the tuning split
    tuned_on: str | None = None  # the split the scale was picked on; None: given
    out_of_vocabulary: int = 0  # reference tokens the graph cannot output (counted as errors)
    graph: str = ""  # DecodingGraph.kind

    @property
    def rate(self) -> float:
        return self.counts.rate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"unit": self.unit, **self.counts.to_dict()}
        out.update(utterances=self.utterances, not_final=self.not_final)
        out.update(acoustic_scale=self.acoustic_scale, out_of_vocabulary=self.out_of_vocabulary)
        out["graph"] = self.graph
        if self.tuned_on is not None:
            out.update(tuned_on=self.tuned_on, sweep=self.sweep)
        return out


def phone_references(labels: Sequence[str], frame_refs: Sequence[np.ndarray]) -> list[list[str]]:
    """Each utterance's (T_i,) frame labels as its phones, runs merged, silence dropped."""
    phones, label_phone = label_phones(labels)
    return [[phones[p] for p in seq if phones[p] not in SILENCE]
            for seq in phone_sequences(frame_refs, label_phone)]  # fmt: skip


def word_references(store: FeatureStore, ids: Sequence[str]) -> list[list[str]]:
    """The transcripts of ``ids`` as word lists (``ConfigError`` where one has none)."""
    if store.texts is None:
        raise ConfigError(f"{store.location}: no transcripts, so no word references to score")
    where = {utt: i for i, utt in enumerate(store.ids)}
    refs = [store.texts[where[utt]].split() for utt in ids]
    empty = next((utt for utt, ref in zip(ids, refs, strict=True) if not ref), None)
    if empty is not None:
        raise ConfigError(f"{store.location}: utterance {empty} has no transcript to score")
    return refs


def training_graph(
    store: FeatureStore, split: str = "train", lm_weight: float = 1.0
) -> tuple[DecodingGraph, np.ndarray]:
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


def training_word_graph(
    store: FeatureStore,
    lexicon: Lexicon,
    arpa: str | Path | None = None,
    split: str = "train",
    model: GmmHmm | None = None,
) -> DecodingGraph:
    """The word graph over the store's labels: ``lexicon``, and the LM in ``arpa`` or a
    bigram of ``split``'s transcripts; through the tree of alignment ``model`` if given."""
    ids = [store.ids[int(i)] for i in store.indices(split)]
    sentences = [] if arpa is not None else word_references(store, ids)
    return build_word_graph(list(store.labels.names), lexicon, arpa, sentences, model)


def decoded_errors(
    graph: DecodingGraph,
    log_prior: np.ndarray,
    logps: Sequence[np.ndarray],
    refs: Sequence[Sequence[str]],
    ids: Sequence[str],
    opts: DecodeOptions,
    decoder: Decoder | None = None,
) -> Decoded:
    """Decode each utterance's (T_i, C) log-posteriors at ``opts.acoustic_scale`` (which
    must be set) and count the errors against its reference tokens (``phone_references``
    or ``word_references``)."""
    if opts.acoustic_scale is None:
        raise ConfigError("decode: decoded_errors needs an acoustic scale (tune_scale picks one)")
    if not len(ids):
        raise ConfigError("decode: no utterances to decode")
    decoder = decoder or Decoder(graph.fst, progress=False)
    label = f"decode {RATE_NAMES[graph.unit]} at scale {opts.acoustic_scale:g}"
    paths = decoder.best_paths(logps, log_prior, opts, label)
    total, not_final, hyps = ErrorCounts(), 0, {}
    for utt_id, path, ref in zip(ids, paths, refs, strict=True):
        not_final += not path.reached_final
        # an utterance the beam could not finish is counted as all deletions, never dropped
        hyp = graph.tokens(path.symbols) if path.reached_final else []
        total = total + error_counts(list(ref), hyp)
        hyps[utt_id] = hyp
    known = set(graph.symbols)
    oov = sum(token not in known for ref in refs for token in ref)
    return Decoded(graph.unit, total, len(ids), not_final, opts.acoustic_scale, hyps,
                   out_of_vocabulary=oov, graph=graph.kind)  # fmt: skip


def tune_scale(
    graph: DecodingGraph,
    log_prior: np.ndarray,
    logps: Sequence[np.ndarray],
    refs: Sequence[Sequence[str]],
    ids: Sequence[str],
    opts: DecodeOptions,
    scales: Sequence[float] = SCALES,
    decoder: Decoder | None = None,
    patience: int | None = PATIENCE,
) -> tuple[float, dict[str, float]]:
    """The acoustic scale of ``scales`` with the lowest decoded error rate on the given
    (tuning) utterances, and the rate of every scale visited (Kaldi's scoring picks its LM
    weight so, on dev).

    The sweep runs from the largest scale down and stops after ``patience`` scales in a
    row worse than the best so far (None: every scale). The rate is unimodal in the scale
    in practice, and the small scales, where the LM dominates and the beam admits the most
    hypotheses, are the slow ones: stopping there saves most of the sweep's time."""
    if not len(scales) or (patience is not None and patience < 1):
        raise ConfigError("decode: the sweep needs scales and a patience >= 1 (None: all)")
    sweep: dict[str, float] = {}
    best, worse = None, 0
    for scale in sorted(scales, reverse=True):
        result = decoded_errors(graph, log_prior, logps, refs, ids,
                                replace(opts, acoustic_scale=scale), decoder)  # fmt: skip
        sweep[f"{scale:g}"] = result.rate
        if best is None or result.rate <= sweep[f"{best:g}"]:  # ties: the smaller scale
            best, worse = scale, 0
        else:
            worse += 1
            if patience is not None and worse >= patience:
                break
    return float(best), sweep  # type: ignore[arg-type]  # scales is not empty
