"""ensemble.yaml parsing, the documented schema, label maps, frame rates and the batch plan."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kdpipe.corpus.views import crop_windows
from kdpipe.errors import ConfigError
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.teach import EnsembleConfig, MemberConfig, ViewConfig, load_ensemble, rule_from_flags
from kdpipe.teach.ensemble import Member, _to_rate, combine, member_logprobs
from kdpipe.teach.ensemble_yaml import ensemble_from_dict
from kdpipe.teach.job import parse_shard, plan_batches
from kdpipe.teach.members.base import Declared

DOC = Path(__file__).resolve().parents[2] / "docs" / "ensemble-yaml.md"


def test_every_field_is_documented():
    text = DOC.read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text, flags=re.M))
    for cls in (EnsembleConfig, MemberConfig, ViewConfig):
        fields = {f.name for f in dataclasses.fields(cls)}
        assert fields <= documented, fields - documented


def test_load_resolves_paths_and_defaults(tmp_path):
    p = tmp_path / "sub" / "e.yaml"
    p.parent.mkdir()
    p.write_text("members:\n  - a\n  - {checkpoint: /abs/b, weight: 3}\nrule: {name: full}\n")
    e = load_ensemble(p)
    assert e.members[0].checkpoint == str(p.parent / "a")
    assert e.members[1].checkpoint == "/abs/b" and e.members[1].weight == 3
    assert e.rule == Rule("full", {}) and e.combine == "mean-prob" and e.view is None


@pytest.mark.parametrize(
    ("data", "msg"),
    [
        ({}, "'members' must be a non-empty list"),
        ({"members": [{"weight": 1}]}, "missing key 'checkpoint'"),
        ({"members": [{"checkpoint": "a", "weight": -1}]}, "weight must be > 0"),
        ({"members": [{"checkpoint": "a", "frame_rate": "skip"}]}, "frame_rate must be one of"),
        ({"members": ["a", "x/a"]}, "names must be distinct"),
        ({"members": ["a"], "view": {"offset_ms": 3}}, "missing key 'length_ms'"),
        ({"members": ["a"], "view": {"length_ms": 10, "jitter": 1}}, "unknown key"),
        ({"members": ["a"], "rule": {"name": "best"}}, "unknown selection rule"),
        ({"members": ["a"], "subsampling": 0}, "subsampling must be >= 1"),
        ({"members": [{"checkpoint": "a", "label_map": ["x"]}]}, "label_map must be"),
    ],
)
def test_schema_errors(data, msg):
    with pytest.raises(ConfigError, match=re.escape(msg)):
        ensemble_from_dict(data, "e.yaml")


def test_rule_flags_and_shards(monkeypatch):
    assert rule_from_flags(topk=4) == Rule("topk", {"k": 4})
    assert rule_from_flags(mass=0.9) == Rule("cumulative", {"mass": 0.9})
    assert rule_from_flags() is None
    assert parse_shard("2/5") == (2, 5) and parse_shard(None) == (0, 1)
    for bad in ("5/5", "a/b", "3"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "2")
    assert parse_shard(None) == (2, 3)
    with pytest.raises(ConfigError, match="torchrun"):
        parse_shard("0/2")


class _Fixed(torch.nn.Module):
    """Returns fixed logits (B, T, C_m) whatever the input."""

    def __init__(self, logits: torch.Tensor):
        super().__init__()
        self.logits = logits

    def forward(self, x, lengths):
        return self.logits.expand(len(x), *self.logits.shape[1:]), lengths


def test_label_map_merges_and_moves_classes():
    logits = torch.log(torch.tensor([[[0.5, 0.3, 0.2]]]))  # member labels x, y, z
    cfg = MemberConfig("m", label_map={"x": "c", "y": "a", "z": "a"})
    declared = Declared(LabelSet(("x", "y", "z")), "frame", "logits", 1, None, None, "")
    mb = Member(cfg, declared, np.array([2, 0, 0]), 1, _Fixed(logits))
    lp, _ = member_logprobs(mb, torch.zeros(1, 1, 2), torch.tensor([1]), 4, "frame")
    np.testing.assert_allclose(lp.exp()[0, 0].numpy(), [0.5, 0, 0.5, 0], atol=1e-6)
    mb.columns = np.array([3, 0, 1])  # one-to-one
    lp, _ = member_logprobs(mb, torch.zeros(1, 1, 2), torch.tensor([1]), 4, "frame")
    np.testing.assert_allclose(lp.exp()[0, 0].numpy(), [0.3, 0.2, 0, 0.5], atol=1e-6)


def test_frame_rate_average_respects_lengths():
    p = torch.tensor([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [7.0, 7.0]])  # last frame: padding
    lp = torch.log(p / p.sum(1, keepdim=True))[None]  # (1, 4, 2)
    out, ln = _to_rate(lp, torch.tensor([3]), 2, "average")
    assert ln.tolist() == [2]
    np.testing.assert_allclose(out.exp()[0].numpy(), [[0.7, 0.3], [0.1, 0.9]], atol=1e-6)
    dec, _ = _to_rate(lp, torch.tensor([3]), 2, "decimate")
    np.testing.assert_allclose(dec.exp()[0, :2].numpy(), [[0.9, 0.1], [0.1, 0.9]], atol=1e-6)


def test_combine_geometric_renormalises():
    a = torch.log(torch.tensor([[0.8, 0.2]]))
    b = torch.log(torch.tensor([[0.2, 0.8]]))
    g = combine([a, b], [1.0, 1.0], "mean-logprob", [None, None])
    np.testing.assert_allclose(g.exp().numpy(), [[0.5, 0.5]], atol=1e-6)
    m = combine([a, b], [3.0, 1.0], "mean-prob", [None, None])
    np.testing.assert_allclose(m.exp().numpy(), [[0.65, 0.35]], atol=1e-6)


def test_plan_is_shard_independent_and_views_are_deterministic():
    lengths = np.random.default_rng(0).integers(5, 50, 40)
    index = np.arange(100, 140)
    plan = plan_batches(index, lengths, 100, window_frames=300)
    flat = np.concatenate([b for _, b in plan])
    assert sorted(flat) == list(index)  # every utterance exactly once
    assert len({w for w, _ in plan}) > 1  # several feature windows
    shards = [plan[i::3] for i in range(3)]
    assert sum(len(s) for s in shards) == len(plan)
    ids = [f"u{i}" for i in range(40)]
    view = ViewConfig(length_ms=40, random=True, seed=1)
    w1 = crop_windows(view, ids, lengths, 10.0)
    w2 = crop_windows(view, ids[::-1], lengths[::-1], 10.0)[::-1]
    np.testing.assert_array_equal(w1, w2)
    assert (w1[:, 1] - w1[:, 0] == 4).all() and (w1[:, 1] <= lengths).all()
    fixed = crop_windows(ViewConfig(length_ms=30, offset_ms=20), ids, lengths, 10.0)
    assert (fixed == [2, 5]).all()
