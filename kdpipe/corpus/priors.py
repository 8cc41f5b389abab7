"""Label priors p(c): what a hybrid model's posteriors are divided by to become the
pseudo log-likelihoods a decoder or aligner scores with (log p(c|x) - log p(c)).

- ``label_priors(store, split)``: each label's share of the split's frames (the training
  alignment the model learnt from), floored so that an unseen label is not log 0;
- ``read_priors(path, C)``: a Kaldi vector file (text ``[ 1 2 3 ]`` as ``copy-vector
  --binary=false`` writes, one number a line, or binary ``\\0BFV``/``\\0BDV``) of counts or
  probabilities, as log priors;
- ``write_priors(path, priors)``: the text Kaldi vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import ConfigError, LabelSetError

PRIOR_FLOOR = 1e-5  # a label never seen in training gets this prior (not log 0)


def label_priors(store: FeatureStore, split: str = "train") -> np.ndarray:
    """(C,) float64 prior of each label: its share of the split's frames, floored."""
    counts = np.zeros(len(store.labels), dtype=np.float64)
    for i in store.indices(split):
        counts += np.bincount(store.frame_labels(int(i)), minlength=len(counts))
    priors = counts / max(counts.sum(), 1.0)
    return np.maximum(priors, PRIOR_FLOOR)


def read_priors(path: str | Path, num_classes: int) -> np.ndarray:
    """(C,) float64 log priors from a Kaldi vector: text ``[ 1 2 3 ]`` (``copy-vector
    --binary=false``), one number a line, or binary (``\\0BFV``/``\\0BDV``); counts or
    probabilities, normalised to sum 1. ``ConfigError`` naming the file otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"priors file not found: {p}")
    raw = p.read_bytes()
    if raw.startswith(b"\0B"):
        from kaldiio.matio import read_kaldi  # kaldiio stays out of light importers

        try:
            with open(p, "rb") as f:
                values = np.asarray(read_kaldi(f), dtype=np.float64).reshape(-1)
        except (ValueError, AssertionError, RuntimeError) as error:
            raise ConfigError(f"{p}: not a Kaldi vector of priors ({error})") from None
    else:
        words = raw.decode("utf-8", "replace").replace("[", " ").replace("]", " ").split()
        try:
            values = np.array([float(w) for w in words], dtype=np.float64)
        except ValueError:
            raise ConfigError(
                f"{p}: priors must be numbers (a Kaldi vector '[ 1 2 3 ]' or one a line)"
            ) from None
    if len(values) != num_classes:
        raise LabelSetError(f"{p}: {len(values)} priors; the label set has {num_classes} labels")
    if not np.isfinite(values).all() or (values <= 0).any():
        raise ConfigError(f"{p}: priors must be finite and > 0 (counts or probabilities)")
    return np.log(values / values.sum())


def write_priors(path: str | Path, priors: np.ndarray) -> None:
    """Priors (or counts) as a text Kaldi vector, ``[ p_0 p_1 ... ]``, which Kaldi's
    ``copy-vector`` and ``read_priors`` read."""
    values = np.asarray(priors, dtype=np.float64).reshape(-1)
    Path(path).write_text("[ " + " ".join(f"{v:.9g}" for v in values) + " ]\n")
