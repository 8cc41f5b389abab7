"""Helpers of the teach tests: tiny feature stores and randomly initialised teachers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.labels import LabelSet
from kdpipe.testing.corpora import make_feature_store

LABELS = ("sil", "a", "b", "c", "d")
DIM = 8
TINY: dict[str, dict[str, Any]] = {
    "blstm": {"hidden_dim": 8, "num_layers": 1, "dropout": 0.0},
    "lstm": {"hidden_dim": 8, "num_layers": 1, "dropout": 0.0},
    "dnn": {"hidden_dim": 16, "num_layers": 1, "left_context": 1, "right_context": 1},
    "tdnn": {"hidden_dim": 8, "kernel_sizes": [3, 3], "dilations": [1, 1], "subsampling": 2},
    "cnn": {"channels": [4, 4]},
    "slowteacher:SlowTeacher": {},
}


def feature_store(path: Path, task: str = "frame", **kw: Any) -> FeatureStore:
    kw.setdefault("per_split", {"train": 10, "dev": 3})
    kw.setdefault("frames", (20, 50))
    kw.setdefault("labels", LABELS)
    return make_feature_store(path, task=task, num_mel_bins=DIM, **kw)


def make_teacher(
    out: Path,
    fs: FeatureStore,
    arch: str = "blstm",
    *,
    labels: Sequence[str] = LABELS,
    seed: int = 0,
    config: dict[str, Any] | None = None,
    scale: float = 3.0,
    nan: bool = False,
) -> Path:
    """A checkpoint of ``arch`` with random (seeded) weights for ``fs``'s features.

    ``scale`` multiplies every weight so that posteriors are peaked; ``nan`` poisons them.
    """
    import torch

    from kdpipe.models import build_model, make_card, save_checkpoint

    torch.manual_seed(seed)
    model = build_model(arch, fs.dim, len(labels), {**TINY[arch], **(config or {})})
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale)
            if nan:
                p.fill_(float("nan"))
    card = make_card(
        model,
        labels=LabelSet(tuple(labels)),
        features=fs.config,
        feature_fingerprint=fs.config.fingerprint,
        data_fingerprint=fs.fingerprint,
    )
    save_checkpoint(out, model, card)
    return out


def store_values(location: str | Path) -> dict[str, tuple]:
    """{utt id: (indices, values, tail, hard, window)} of a frame- or utt-level store."""
    from kdpipe.store.reader import StoreReader

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
    assert sorted(a) == sorted(b)
    for u in a:
        for x, y in zip(a[u], b[u], strict=True):
            if x is None or y is None:
                assert x is None and y is None, u
            elif isinstance(x, tuple):
                assert x == y, u
            else:
                np.testing.assert_array_equal(x, y, err_msg=u)
