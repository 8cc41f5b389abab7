"""Helpers for the KD tests (imported by the other ``test_kd_*`` files): target stores
written with ``StoreWriter`` from a model's or random posteriors on a tiny feature store."""

from __future__ import annotations

import numpy as np
import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.essence import Rule, as_logprobs
from kdpipe.store import StoreMeta, StoreReader, StoreWriter

torch.set_num_threads(1)


def write_store(
    path,
    corpus: FeatureStore,
    *,
    model: torch.nn.Module | None = None,
    rule: Rule | None = None,
    splits=("train",),
    skip=(),
    windows: dict | None = None,
    subsampling: int = 1,
    level: str = "frame",
    hard: bool = True,
    part_frames: int = 200,
    seed: int = 0,
    labels=None,
    frame_shift_ms: float | None = None,
    record_windows: bool = True,
) -> str:
    """A store of ``corpus``'s ``splits`` (minus ``skip``): the model's posteriors or random
    ones, ``windows`` {id: (start, stop)} crops, teacher ``subsampling`` (rows taken every
    ``subsampling`` input frames)."""
    rule = rule or Rule("topk", {"k": 2})
    lvl = "frame" if level == "frame" else "utt"
    meta = StoreMeta(
        labels=list(labels or corpus.labels.to_list()),
        rule=rule,
        levels=(lvl,),
        hard_labels=(lvl,) if hard else (),
        subsampling=subsampling,
        frame_shift_ms=frame_shift_ms or corpus.config.frame_shift_ms * subsampling,
        features={"fingerprint": corpus.config.fingerprint, "config": corpus.config.to_dict()},
        corpus_fingerprint=corpus.fingerprint,
    )
    rng = np.random.default_rng(seed)
    c = len(meta.labels)
    with StoreWriter(path, meta, part_frames=part_frames, shard="t") as w:
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
            rows = rule.apply(as_logprobs(z, "logits"), rng=seed + i)
            kw = {}
            if lvl == "frame":
                kw["frame"] = rows
                if hard:
                    labels = corpus.frame_labels(i)[a : None if b == -1 else b][::subsampling]
                    kw["hard_frame"] = labels[: rows.num_rows]
            else:
                kw["utt"] = rows
                if hard:
                    kw["hard_utt"] = int(corpus.clip_labels[i])
            w.add(u, input_window=(a, b) if record_windows else None, **kw)
    return str(path)


def test_write_store_roundtrip(tmp_path):
    from kdpipe.testing.corpora import make_feature_store

    fs = make_feature_store(tmp_path / "f.zarr", per_split={"train": 3, "dev": 1}, num_mel_bins=4)
    loc = write_store(tmp_path / "t.zarr", fs, windows={"train-u1": (2, 10)})
    r = StoreReader(loc)
    assert r.ids == ["train-u0", "train-u1", "train-u2"]
    assert r.num_frames[1] == 8 and r.input_window[1].tolist() == [2, 10]


def test_pad_rows_dense_single_row_is_writable():
    """A clip-level store with the full rule has one dense row per utterance; its index
    array must be a fresh writable array (torch.from_numpy warns on read-only ones)."""
    import numpy as np

    from kdpipe.essence import full
    from kdpipe.learn.targets import pad_rows

    logp = np.log(np.full((1, 5), 0.2, dtype=np.float32))
    idx, lp, tail = pad_rows(full(logp))
    assert idx.flags.writeable and idx.tolist() == [[0, 1, 2, 3, 4]]
    assert np.allclose(lp, logp) and np.isneginf(tail).all()
