"""Shared by the ``learn_*`` benchmarks: a synthetic corpus and a top-k store over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpipe.essence import Rule, as_logprobs
from kdpipe.store import StoreMeta, StoreWriter
from kdpipe.testing.corpora import make_feature_store


def build(
    root: Path, utts: int, classes: int, k: int = 8, frames=(200, 300), dim: int = 40
) -> tuple[str, str]:
    """(feature store, target store) of ``utts`` train utterances (+ 4 dev) with random
    teacher posteriors over ``classes`` classes, top-``k``."""
    fs = make_feature_store(
        root / "feats.zarr",
        labels=tuple(f"c{i}" for i in range(classes)),
        per_split={"train": utts, "dev": 4},
        num_mel_bins=dim,
        frames=frames,
    )
    meta = StoreMeta(
        labels=fs.labels.to_list(),
        rule=Rule("topk", {"k": k}),
        hard_labels=("frame",),
        features={"fingerprint": fs.config.fingerprint, "config": fs.config.to_dict()},
        corpus_fingerprint=fs.fingerprint,
    )
    rng = np.random.default_rng(0)
    with StoreWriter(root / "targets.zarr", meta) as w:
        for i, u in enumerate(fs.ids):
            if fs.splits[i] != "train":
                continue
            n = int(fs.num_frames[i])
            z = rng.standard_normal((n, classes), dtype=np.float32) * 6  # (T, C) logits
            w.add(u, frame=meta.rule.apply(as_logprobs(z, "logits")),
                  hard_frame=fs.frame_labels(i))  # fmt: skip
    return str(root / "feats.zarr"), str(root / "targets.zarr")
