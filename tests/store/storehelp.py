"""Helpers of the target-store tests: small metadata and random utterances."""

from __future__ import annotations

import numpy as np

from kdpipe.essence import Rule, as_logprobs
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter


def labels(c: int) -> tuple[str, ...]:
    return tuple(f"c{i}" for i in range(c))


def small_meta(c: int = 40, rule: Rule | None = None, **kw) -> StoreMeta:
    return StoreMeta(labels=labels(c), rule=rule or Rule("topk", {"k": 4}), **kw)


def random_utterances(
    meta: StoreMeta, n: int, seed: int = 0, max_frames: int = 30
) -> dict[str, dict]:
    """``n`` utterances of random peaked targets for ``meta``: id -> StoreWriter.add kwargs."""
    rng = np.random.default_rng(seed)
    c = meta.num_classes
    out = {}
    for i in range(n):
        t = int(rng.integers(0, max_frames + 1))
        kw: dict = {}
        if "frame" in meta.levels:
            lp = as_logprobs(rng.standard_normal((t, c)) * 4, "logits")
            kw["frame"] = meta.rule.apply(lp, rng=rng)
            kw["members_frame"] = [
                meta.rule.apply(as_logprobs(rng.standard_normal((t, c)) * 4, "logits"), rng=rng)
                for _ in meta.members
            ]
            if "frame" in meta.hard_labels:
                kw["hard_frame"] = rng.integers(-1, c, t)
        if "utt" in meta.levels:
            lp = as_logprobs(rng.standard_normal((1, c)) * 4, "logits")
            kw["utt"] = meta.rule.apply(lp, rng=rng)
            kw["members_utt"] = [
                meta.rule.apply(as_logprobs(rng.standard_normal((1, c)) * 4, "logits"), rng=rng)
                for _ in meta.members
            ]
            if "utt" in meta.hard_labels:
                kw["hard_utt"] = int(rng.integers(0, c))
        out[f"utt{seed}-{i:04d}"] = kw
    return out


def write_store(location, meta: StoreMeta, utts: dict[str, dict], **kw) -> StoreWriter:
    with StoreWriter(location, meta, **kw) as w:
        for u, a in utts.items():
            w.add(u, **a)
    return w
