"""Target stores for tests: fake metadata and utterances, writing them, reading them back.

- ``label_names``, ``small_meta``: ``StoreMeta`` of C made-up classes (top-4 by default).
- ``random_utterances``: random peaked targets for a ``StoreMeta`` (``StoreWriter.add``
  keyword arguments per utterance id).
- ``write_store``: the one writer: utterances under a ``StoreMeta``, through ``StoreWriter``.
- ``corpus_store``: a store of targets for a feature store's utterances: a model's
  posteriors or random ones, with crops, teacher subsampling and hard labels.
- ``store_values``, ``assert_same_store``: a store's content as arrays, and comparing two.
- ``damage_file``: truncate, flip a byte of, empty or delete a file (a chunk, a record).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.essence import Rule, as_logprobs
from kdpipe.store.posteriors import quality
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter

DAMAGE = ("truncate", "flip", "empty", "missing")


def label_names(c: int) -> tuple[str, ...]:
    """``c0`` .. ``c{c-1}``."""
    return tuple(f"c{i}" for i in range(c))


def small_meta(c: int = 40, rule: Rule | None = None, **kw: Any) -> StoreMeta:
    """``StoreMeta`` over ``label_names(c)`` with ``rule`` (top-4 by default) and ``kw``."""
    return StoreMeta(labels=label_names(c), rule=rule or Rule("topk", {"k": 4}), **kw)


def random_utterances(
    meta: StoreMeta, n: int, seed: int = 0, max_frames: int = 30
) -> dict[str, dict[str, Any]]:
    """``n`` utterances of random peaked targets for ``meta``: id -> StoreWriter.add kwargs.

    Each has 0 to ``max_frames`` frames, rows for every level and member of ``meta``, and
    random hard labels (frame labels include -1, "no label") where ``meta`` has them.
    """
    rng = np.random.default_rng(seed)
    c = meta.num_classes
    out = {}
    for i in range(n):
        t = int(rng.integers(0, max_frames + 1))
        kw: dict[str, Any] = {}
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


def write_store(
    location: str | Path,
    meta: StoreMeta,
    utts: Mapping[str, Mapping[str, Any]],
    **writer_kw: Any,
) -> StoreWriter:
    """Write ``utts`` (id -> ``StoreWriter.add`` kwargs, in order) as a store of ``meta`` at
    ``location``; ``writer_kw`` go to ``StoreWriter`` (part_frames, chunk_rows, overwrite,
    shard, ...). Returns the closed writer (``location``, ``parts_written``)."""
    with StoreWriter(location, meta, **writer_kw) as w:
        for u, a in utts.items():
            w.add(u, **a)
    return w


def corpus_store(
    location: str | Path,
    corpus: FeatureStore,
    *,
    model: torch.nn.Module | None = None,
    rule: Rule | None = None,
    splits: Sequence[str] = ("train",),
    skip: Sequence[str] = (),
    windows: Mapping[str, tuple[int, int]] | None = None,
    subsampling: int = 1,
    level: str = "frame",
    hard: bool = True,
    part_frames: int = 200,
    seed: int = 0,
    labels: Sequence[str] | None = None,
    frame_shift_ms: float | None = None,
    record_windows: bool = True,
) -> str:
    """A store (written by ``write_store``) of targets for ``corpus``'s ``splits`` minus
    ``skip``; returns its location.

    Targets are ``model``'s posteriors (an eval-mode kdpipe model) or, without one, random
    logits, reduced by ``rule`` (top-2 by default). ``windows`` {id: (start, stop)} crops
    an utterance's input frames (stop -1: to the end; recorded as its input window unless
    ``record_windows`` is False); ``subsampling`` keeps every n-th teacher row. ``level``
    ``utt`` writes one row per utterance. ``hard`` adds the corpus's labels as hard labels.
    ``labels`` and ``frame_shift_ms`` override the corpus's (to make mismatched stores).
    """
    rule = rule or Rule("topk", {"k": 2})
    lvl = "frame" if level == "frame" else "utt"
    meta = StoreMeta(
        labels=tuple(labels or corpus.labels.to_list()),
        rule=rule,
        levels=(lvl,),
        hard_labels=(lvl,) if hard else (),
        subsampling=subsampling,
        frame_shift_ms=frame_shift_ms or corpus.config.frame_shift_ms * subsampling,
        features={"fingerprint": corpus.feature_fingerprint, "config": corpus.config.to_dict()},
        corpus_fingerprint=corpus.fingerprint,
    )
    rng = np.random.default_rng(seed)
    c = len(meta.labels)
    utts: dict[str, dict[str, Any]] = {}
    for i, u in enumerate(corpus.ids):
        if corpus.splits[i] not in splits or u in skip:
            continue
        a, b = (windows or {}).get(u, (0, -1))
        x = corpus.features(i)[a : None if b == -1 else b]  # (T, F)
        if model is not None:
            with torch.no_grad():
                z, _ = model(torch.from_numpy(x)[None], torch.tensor([len(x)]))
            z = z[0].numpy() if lvl == "frame" else z.numpy()
            z = z[::subsampling] if lvl == "frame" and subsampling > 1 else z
        else:
            n = -(-len(x) // subsampling) if lvl == "frame" else 1
            z = rng.normal(size=(n, c)).astype(np.float32) * 2
        logp = as_logprobs(z, "logits")
        rows = rule.apply(logp, rng=seed + i)
        kw: dict[str, Any] = {"input_window": (a, b) if record_windows else None}
        labels_here: np.ndarray | int | None = None
        if lvl == "frame":
            kw["frame"] = rows
            if hard:
                y = corpus.frame_labels(i)[a : None if b == -1 else b][::subsampling]
                labels_here = kw["hard_frame"] = y[: rows.num_rows]
        else:
            kw["utt"] = rows
            if hard:
                if corpus.clip_labels is None:
                    raise ValueError("utterance hard labels need a clip-task corpus")
                labels_here = kw["hard_utt"] = int(corpus.clip_labels[i])
        kw["quality"] = quality(logp, labels_here)[1]  # as teach measures it
        utts[u] = kw
    return write_store(location, meta, utts, part_frames=part_frames, shard="t").location


def store_values(location: str | Path) -> dict[str, tuple]:
    """{utt id: (indices, values, tail, hard, window)} of a frame- or utt-level store."""
    r = StoreReader(location)
    lv = "frame" if "frame" in r.meta.levels else "utt"
    out = {}
    for u in r.ids:
        b = r.get(u)
        rows = getattr(b, lv)
        hard = getattr(b, f"hard_{lv}", None)
        out[u] = (
            None if rows.indices is None else np.asarray(rows.indices).copy(),
            np.asarray(rows.values).copy(),
            np.asarray(rows.tail).copy(),
            None if hard is None else np.asarray(hard).copy(),
            tuple(int(v) for v in np.asarray(b.input_window).reshape(-1)),
        )
    return out


def assert_same_store(a: dict, b: dict) -> None:
    """Two ``store_values`` results hold the same utterances with equal arrays."""
    assert sorted(a) == sorted(b)
    for u in a:
        for x, y in zip(a[u], b[u], strict=True):
            if x is None or y is None:
                assert x is None and y is None, u
            elif isinstance(x, tuple):
                assert x == y, u
            else:
                np.testing.assert_array_equal(x, y, err_msg=u)


def damage_file(path: str | Path, how: str, mask: int = 0xFF) -> None:
    """Damage a file in place, one of ``DAMAGE``: ``truncate`` to half its length, ``flip``
    (XOR with ``mask``) its middle byte, ``empty`` it, or delete it (``missing``)."""
    p = Path(path)
    if how not in DAMAGE:
        raise ValueError(f"damage must be one of {DAMAGE}: {how!r}")
    if how == "missing":
        p.unlink()
        return
    raw = bytearray(p.read_bytes())
    if how == "truncate":
        raw = raw[: len(raw) // 2]
    elif how == "flip":
        raw[len(raw) // 2] ^= mask
    else:
        raw = bytearray()
    p.write_bytes(bytes(raw))
