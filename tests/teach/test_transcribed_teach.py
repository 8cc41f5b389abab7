"""Teaching a corpus that has transcripts only (no label set, no alignments): the
ensemble's label set is its first member's, the store has no hard labels and an unknown
agreement, and the others map onto the first by ``label_map``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kdpipe.corpus.featstore import FeatureStore, FeatureStoreWriter
from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import LabelSetError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.models import build_model, make_card, save_checkpoint
from kdpipe.store import StoreReader
from kdpipe.teach import EnsembleConfig, MemberConfig, teach

torch.set_num_threads(1)
PHONES = ("sil", "a", "b", "c", "d")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("tr")
    rng = np.random.default_rng(0)
    w = FeatureStoreWriter(d / "f.zarr", task="transcribed", labels=None,
                           config=FbankConfig(num_mel_bins=8), source="dummy",
                           source_format="dummy")  # fmt: skip
    for i in range(6):
        w.add(f"u{i}", rng.normal(size=(int(rng.integers(20, 40)), 8)).astype(np.float32),
              speaker="s", split="train", text="a b c")  # fmt: skip
    w.close()
    return FeatureStore.open(d / "f.zarr")


def _teacher(out, corpus, labels, seed):
    torch.manual_seed(seed)
    model = build_model("dnn", 8, len(labels), {"hidden_dim": 16, "num_layers": 1})
    card = make_card(model, labels=LabelSet(labels), features=corpus.config,
                     feature_fingerprint=corpus.feature_fingerprint)  # fmt: skip
    save_checkpoint(out, model, card)
    return str(out)


def test_the_first_members_labels_become_the_stores(corpus, tmp_path):
    a = _teacher(tmp_path / "a", corpus, PHONES, 0)
    b = _teacher(tmp_path / "b", corpus, ("a", "b", "c", "d", "sil"), 1)  # same set, reordered
    ens = EnsembleConfig(members=(MemberConfig(a), MemberConfig(b, label_map="names")),
                         rule=Rule("topk", {"k": 3}))  # fmt: skip
    out = tmp_path / "t.zarr"
    summary = teach(ens, corpus.location, out, split=None, progress=False)
    r = StoreReader(out)
    assert r.meta.labels == PHONES and r.meta.hard_labels == () and len(r) == 6
    assert summary.accuracy is None and summary.utterances == 6
    assert np.isnan(r.quality["agreement"]).all() and (r.quality["entropy"] > 0).all()
    frames = dict(zip(r.ids, r.num_frames.tolist(), strict=True))
    assert frames == dict(zip(corpus.ids, corpus.num_frames.tolist(), strict=True))


def test_a_member_that_does_not_map_onto_the_first_is_refused(corpus, tmp_path):
    a = _teacher(tmp_path / "a", corpus, PHONES, 0)
    c = _teacher(tmp_path / "c", corpus, ("x", "y"), 1)
    ens = EnsembleConfig(members=(MemberConfig(a), MemberConfig(c)))
    with pytest.raises(LabelSetError, match="member 1"):
        teach(ens, corpus.location, tmp_path / "t.zarr", split=None, progress=False)
