"""Token sequences for CTC: a corpus' units, and one split's features with its tokens.

``corpus_units`` builds a CTC run's token units from the corpus' whole ``train`` split
transcripts and the units spec (``kdpipe.corpus.units``), whatever subset the run trains
on: a teacher and its students on any part of the corpus share one token set, which is
what lets a student read its teacher's stored posteriors. ``TokenData`` is a split in
memory: features and, per utterance, the transcript's token ids (never blank).

Legend: N utterances, B batch, T frames, F features, L tokens, s subsampling.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.lexicon import lexicon_beside, read_lexicon
from kdpipe.corpus.units import TokenUnits, build_units
from kdpipe.errors import ConfigError, TrainingError
from kdpipe.learn.ctc_config import CtcConfig
from kdpipe.learn.data import Batch, LabelledData
from kdpipe.levels import FRAME

UNITS_DIR = "units"  # a CTC checkpoint's token units, beside its weights


def corpus_units(store: FeatureStore, cfg: CtcConfig) -> TokenUnits:
    """The token units of ``cfg.units`` over the transcripts of the store's train split.

    Phones take ``cfg.lexicon``, else the lexicon beside the corpus the store was prepared
    from (``lexicon_beside``), and ``cfg.g2p`` for words it lacks. ``ConfigError`` when the
    store keeps no transcripts.
    """
    if store.texts is None or not any(store.texts):
        raise ConfigError(
            f"{store.location} keeps no transcripts: CTC trains on transcripts (prepare the "
            "corpus from a folder with a text file)"
        )
    index = store.indices("train")
    transcripts = {store.ids[int(i)]: store.texts[int(i)] for i in index if store.texts[int(i)]}
    spec = cfg.spec
    lexicon = None
    if spec.kind == "phones":
        path = cfg.lexicon or lexicon_beside(store.attrs.get("source", ""))
        if path is None and cfg.g2p is None:
            source = store.attrs.get("source") or store.location
            raise ConfigError(
                f"phone units need a lexicon: none beside {source} (give ctc.lexicon or "
                "--lexicon, or ctc.g2p for eSpeak's G2P)"
            )
        lexicon = None if path is None else read_lexicon(path)
    return build_units(spec, transcripts, lexicon=lexicon, g2p=cfg.g2p)


@dataclass
class TokenData(LabelledData):
    """A split's features and token sequences: ``labels`` holds N (L_i,) int64 token id
    arrays; a batch's ``y`` and ``tokens`` are them padded, (B, L) with IGNORE."""

    blank: int = 0

    @property
    def tokens(self) -> list[np.ndarray]:
        """N (L_i,) int64 token id arrays (``labels``, typed)."""
        return list(self.labels)

    def batch(self, index: Sequence[int] | np.ndarray) -> Batch:
        batch = super().batch(index)  # frame level: labels padded with IGNORE
        batch.tokens = batch.y
        return batch

    def token_lengths(self) -> np.ndarray:
        return np.array([len(tokens) for tokens in self.tokens], dtype=np.int64)  # (N,)

    @classmethod
    def from_units(cls, store: FeatureStore, split: str, units: TokenUnits) -> TokenData:
        """Features (CMVN applied) and the transcripts' tokens of ``split`` (a subset spec
        too); ``CorpusError`` naming an utterance with no transcript or a token outside
        ``units``."""
        if store.texts is None:
            raise ConfigError(f"{store.location} keeps no transcripts for CTC")
        indices = store.indices(split)
        ids = [store.ids[int(i)] for i in indices]
        tokens = [
            np.asarray(units.encode(store.texts[int(i)], f"utterance {store.ids[int(i)]}"),
                       dtype=np.int64)
            for i in indices
        ]  # fmt: skip
        raw = store.read_utterances(indices)
        feats = [store.normalize(utt_feats) for utt_feats, _ in raw]
        return cls(ids, feats, tokens, FRAME, len(units.labels), blank=units.blank)


def min_frames(tokens: np.ndarray) -> int:
    """The fewest CTC output frames for ``tokens`` (L,): L, plus a blank between each pair
    of equal neighbours."""
    return int(len(tokens) + np.count_nonzero(tokens[1:] == tokens[:-1]))


def check_lengths(ids: Sequence[str], frames: np.ndarray, tokens: Sequence[np.ndarray],
                  subsampling: int, where: str) -> None:  # fmt: skip
    """``TrainingError`` naming the utterances whose ceil(T / s) output frames cannot hold
    their tokens (CTC's loss would be infinite there), before the first step."""
    out = -(-np.asarray(frames, dtype=np.int64) // subsampling)  # (N,)
    short = [i for i, seq in enumerate(tokens) if out[i] < min_frames(seq)]
    if short:
        first = short[0]
        raise TrainingError(
            f"{where}: {len(short)} utterance(s) have fewer output frames than CTC needs for "
            f"their tokens, e.g. {ids[first]}: {out[first]} frames (subsampling {subsampling}) "
            f"for {len(tokens[first])} tokens ({min_frames(tokens[first])} frames needed); "
            "lower the model's subsampling or use shorter units"
        )
