"""The ``kdpipe.testing`` builders make what their docstrings say (other tests rely on it)."""

from __future__ import annotations

import numpy as np
import pytest

from kdpipe.store import StoreReader
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.posteriors import synthetic_logprobs
from kdpipe.testing.stores import corpus_store


def test_corpus_store_crops_and_records_windows(tmp_path):
    fs = make_feature_store(tmp_path / "f.zarr", per_split={"train": 3, "dev": 1}, num_mel_bins=4)
    loc = corpus_store(tmp_path / "t.zarr", fs, windows={"train-u1": (2, 10)})
    r = StoreReader(loc)
    assert r.ids == ["train-u0", "train-u1", "train-u2"]
    assert r.num_frames[1] == 8 and r.input_window[1].tolist() == [2, 10]


@pytest.mark.parametrize("kind", ["iid", "segments"])
def test_synthetic_posteriors(kind):
    lp = synthetic_logprobs(2000, 2000, kind, seed=1)
    assert lp.shape == (2000, 2000) and lp.dtype == np.float32
    np.testing.assert_allclose(np.exp(lp).sum(1), 1.0, atol=1e-5)  # normalised
    assert 0.55 < float(np.exp(lp.max(1)).mean()) < 0.8  # mean top-1 probability
    np.testing.assert_array_equal(lp, synthetic_logprobs(2000, 2000, kind, seed=1))
    top = lp.argmax(1)
    repeats = float((top[1:] == top[:-1]).mean())  # segments: the top class persists
    assert repeats > 0.5 if kind == "segments" else repeats < 0.01
