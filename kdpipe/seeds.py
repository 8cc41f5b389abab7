"""Per-utterance random generators: the one source of randomness that must not depend on
the order, the shard or the resumption of a run (crop windows, the ``sample`` rule)."""

from __future__ import annotations

import hashlib

import numpy as np


def utt_rng(seed: int, utt_id: str, stream: str) -> np.random.Generator:
    """A generator that depends only on (seed, utterance id, stream): identical in resumed,
    sharded and reordered runs. ``stream`` separates uses (``view``, ``sample``...)."""
    digest = hashlib.sha256(f"{stream}\0{utt_id}".encode()).digest()
    return np.random.default_rng([seed & 0xFFFFFFFF, *np.frombuffer(digest[:16], np.uint32)])
