"""Per-utterance teacher quality: what teach stores, and learn dropping or down-weighting
utterances by it (``targets: [{path, min_agreement, max_entropy, below}]``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError
from kdpipe.essence import Rule
from kdpipe.learn.quality_filter import QualityFilter
from kdpipe.learn.runs import parse_targets
from kdpipe.learn.stream import TargetStream
from kdpipe.store import StoreReader
from kdpipe.teach import single_teacher, teach
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.stores import corpus_store
from kdpipe.testing.teachers import make_teacher, teacher_corpus

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("q")
    fs = make_feature_store(d / "f.zarr", per_split={"train": 30, "dev": 2}, num_mel_bins=4,
                            frames=(10, 30))  # fmt: skip
    store = corpus_store(d / "a.zarr", fs, part_frames=200)
    return {"fs": fs, "store": store, "dir": d}


def test_teach_stores_each_utterances_entropy_and_agreement(tmp_path):
    fs = teacher_corpus(tmp_path / "f.zarr")
    ckpt = make_teacher(tmp_path / "t", fs, "dnn", scale=1.0)
    out = tmp_path / "t.zarr"
    summary = teach(single_teacher(ckpt, Rule("full", {}), values="float16"), fs.location, out,
                    progress=False)  # fmt: skip
    r = StoreReader(out)
    agree, entropy = r.quality["agreement"], r.quality["entropy"]
    assert agree.shape == entropy.shape == (len(r),) and not np.isnan(agree).any()
    for i, utt in enumerate(r.ids):
        block = r.get(utt)
        probs = block.frame.densify().astype(np.float64)  # (T, C), float16 precision
        hard = block.hard_frame
        assert agree[i] == pytest.approx((probs.argmax(1) == hard).mean(), abs=0.05)
        h = -(probs * np.log(np.where(probs > 0, probs, 1))).sum(1).mean()
        assert entropy[i] == pytest.approx(h, abs=0.01)
    frames = r.num_frames
    assert (agree * frames).sum() / frames.sum() == pytest.approx(summary.accuracy, abs=1e-5)


def _stream(data, targets):
    return TargetStream(targets, data["fs"].location, "train", batch_frames=200, seed=0,
                        block_frames=100)  # fmt: skip


def test_min_agreement_drops_exactly_the_utterances_below(data):
    r = StoreReader(data["store"])
    agree = r.quality["agreement"]
    cut = float(np.median(agree))
    s = _stream(data, [(data["store"], 1.0, None, {"min_agreement": cut})])
    kept = {s._corpus.ids[i] for i in s.table.fidx}
    assert kept == {u for u, a in zip(r.ids, agree, strict=True) if a >= cut}
    (report,) = s.quality_reports
    assert report["below"] == int((agree < cut).sum()) > 0 and report["unknown"] == 0
    assert len({e for b in s for e in b.index.tolist()}) == len(kept)


def test_below_as_a_weight_down_weights_instead_of_dropping(data):
    r = StoreReader(data["store"])
    entropy = r.quality["entropy"]
    cut = float(np.median(entropy))
    s = _stream(data, [(data["store"], 2.0, None, {"max_entropy": cut, "below": 0.25})])
    assert len(s.table) == len(r)
    for batch in s:
        for e, w in zip(batch.index.tolist(), batch.targets.weight.tolist(), strict=True):
            high = entropy[r.ids.index(s._corpus.ids[s.table.fidx[e]])] > cut
            assert w == pytest.approx(0.5 if high else 2.0)


def test_unknown_quality_is_never_below_and_is_reported(data):
    # the corpus' hard labels are absent from a store without them: agreement NaN
    store = corpus_store(data["dir"] / "nohard.zarr", data["fs"], hard=False)
    s = _stream(data, [(store, 1.0, None, {"min_agreement": 0.99})])
    (report,) = s.quality_reports
    assert report["below"] == 0 and report["unknown"] == report["utterances"] == len(s.table)


def test_thresholds_are_validated_and_parsed():
    assert parse_targets([{"path": "a", "min_agreement": 0.5}]) == [
        ("a", 1.0, None, {"min_agreement": 0.5})
    ]
    assert parse_targets([{"path": "a", "split": "x"}]) == [("a", 1.0, "x")]
    for bad, msg in (({"min_agreement": 2}, "min_agreement must be in"),
                     ({"max_entropy": -1}, "max_entropy must be"),
                     ({"min_agreement": 0.5, "below": 1.5}, "below must be")):  # fmt: skip
        with pytest.raises(ConfigError, match=msg):
            parse_targets([{"path": "a", **bad}])
    with pytest.raises(ConfigError, match="expected a path"):
        parse_targets([{"path": "a", "min_agreemnt": 0.5}])
    assert not QualityFilter().active and QualityFilter().to_dict() == {}


def test_learn_logs_and_records_what_the_filter_did(data, tmp_path):
    r = StoreReader(data["store"])
    cut = float(np.median(r.quality["agreement"]))
    cfg = tmp_path / "kd.yaml"
    cfg.write_text(json.dumps({"targets": [{"path": data["store"], "min_agreement": cut}]}))
    out = tmp_path / "student"
    res = CliRunner().invoke(app, ["learn", "--config", str(cfg), "--corpus", data["fs"].location,
                                   "--student", "dnn", "--out", str(out), "--epochs", "1",
                                   "-m", "hidden_dim=8", "-m", "num_layers=1",
                                   ])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "teacher quality" in res.output and "min_agreement" in res.output
    card = json.loads((out / "card.json").read_text())
    (report,) = card["training"]["quality_filter"]
    assert report["below"] == int((r.quality["agreement"] < cut).sum())
    assert card["training"]["utterances"] == len(r) - report["below"]
