"""Shared by the ``learn_*`` benchmarks: a synthetic corpus and a top-k store over it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from kdpipe.essence import Rule, as_logprobs
from kdpipe.store import StoreMeta, StoreWriter
from kdpipe.testing.corpora import make_feature_store


def build(
    root: Path,
    utts: int,
    classes: int,
    k: int = 8,
    frames=(200, 300),
    dim: int = 40,
    level: str = "frame",
) -> tuple[str, str]:
    """(feature store, target store) of ``utts`` train utterances (+ 4 dev) with random
    teacher posteriors over ``classes`` classes, top-``k``; ``level`` "utt" makes a clip
    corpus with one posterior per utterance (for the pooled students)."""
    fs = make_feature_store(
        root / "feats.zarr",
        task="frame" if level == "frame" else "clip",
        labels=tuple(f"c{i}" for i in range(classes)),
        per_split={"train": utts, "dev": 4},
        num_mel_bins=dim,
        frames=frames,
    )
    meta = StoreMeta(
        labels=fs.labels.to_list(),
        rule=Rule("topk", {"k": k}),
        levels=(level,),
        hard_labels=(level,),
        features={"fingerprint": fs.config.fingerprint, "config": fs.config.to_dict()},
        corpus_fingerprint=fs.fingerprint,
    )
    rng = np.random.default_rng(0)
    with StoreWriter(root / "targets.zarr", meta) as w:
        for i, u in enumerate(fs.ids):
            if fs.splits[i] != "train":
                continue
            n = int(fs.num_frames[i]) if level == "frame" else 1
            z = rng.standard_normal((n, classes), dtype=np.float32) * 6  # (T, C) logits
            rows = meta.rule.apply(as_logprobs(z, "logits"))
            if level == "frame":
                w.add(u, frame=rows, hard_frame=fs.frame_labels(i))
            else:
                assert fs.clip_labels is not None
                w.add(u, utt=rows, hard_utt=int(fs.clip_labels[i]))
    return str(root / "feats.zarr"), str(root / "targets.zarr")
