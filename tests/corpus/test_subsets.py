"""Split subsets (``train[:10%]``): the spec syntax, the selection's properties, and the
users of a split name (LabelledData, load_split, teach, the KD join) on a subset."""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kdpipe.corpus.subsets import parse_split, subset
from kdpipe.errors import CorpusError, StoreError
from kdpipe.testing.corpora import make_feature_store

torch.set_num_threads(1)
IDS = st.lists(
    st.text(alphabet="abcxyz0189-_/", min_size=1, max_size=6), min_size=1, max_size=50, unique=True
)
PCT = st.integers(1, 999).map(lambda k: k / 10)  # 0.1 .. 99.9, decimals included


def chosen(ids: list[str], spec: str, index: np.ndarray | None = None) -> set[str]:
    _, lo, hi = parse_split(spec)
    index = np.arange(len(ids)) if index is None else index
    out = subset(ids, index, lo, hi)
    assert (np.diff(out) > 0).all()  # store order, no repeats
    return {ids[i] for i in out}


def pct(x: float) -> str:
    return f"{x:g}%"


@settings(max_examples=60, deadline=None)
@given(IDS, PCT)
def test_complementary(ids, c):
    head, tail = chosen(ids, f"train[:{pct(c)}]"), chosen(ids, f"train[{pct(c)}:]")
    assert head | tail == set(ids) and not head & tail
    assert len(head) == round(c / 100 * len(ids))


@settings(max_examples=60, deadline=None)
@given(IDS, st.lists(PCT, min_size=4, max_size=4, unique=True))
def test_nested(ids, bounds):
    a, b, c, d = sorted(bounds)
    inner, outer = chosen(ids, f"s[{pct(b)}:{pct(c)}]"), chosen(ids, f"s[{pct(a)}:{pct(d)}]")
    assert inner <= outer
    assert chosen(ids, f"s[:{pct(a)}]") <= chosen(ids, f"s[:{pct(b)}]")
    n = len(ids)
    assert len(inner) == round(c / 100 * n) - round(b / 100 * n)


@settings(max_examples=60, deadline=None)
@given(IDS, PCT, PCT, st.randoms(use_true_random=False))
def test_independent_of_store_order_and_of_other_splits(ids, x, y, rnd):
    lo, hi = sorted((x, y)) if x != y else (0.0, x)
    spec = f"train[{pct(lo)}:{pct(hi)}]"
    shuffled = list(ids)
    rnd.shuffle(shuffled)
    assert chosen(ids, spec) == chosen(shuffled, spec)
    # the same split inside a bigger store: other utterances around it change nothing
    store = [f"other{i}" for i in range(7)] + shuffled + ["zzz"]
    index = np.arange(7, 7 + len(ids))
    assert chosen(store, spec, index) == chosen(ids, spec)


def test_order_is_sha256_of_the_id():
    ids = [f"u{i}" for i in range(20)]
    by_hash = sorted(ids, key=lambda u: hashlib.sha256(u.encode()).digest())
    assert chosen(ids, "train[:25%]") == set(by_hash[:5])
    assert chosen(ids, "train[25%:40%]") == set(by_hash[5:8])


def test_parse():
    assert parse_split("train") == ("train", 0.0, 1.0)
    assert parse_split("train[:10%]") == ("train", 0.0, 0.1)
    assert parse_split("train[10%:]") == ("train", 0.1, 1.0)
    assert parse_split("dev-clean[12.5%:37.5%]") == ("dev-clean", 0.125, 0.375)
    assert parse_split("train[:100%]") == ("train", 0.0, 1.0)


@pytest.mark.parametrize(
    "spec",
    ["train[10]", "train[50%:20%]", "train[:150%]", "train[20%:20%]", "train[10%]",
     "train[", "train[:10%]x", "[:10%]", "train[a%:]", "train[-5%:]", "train[:0%]"],
)  # fmt: skip
def test_bad_specs_name_the_spec_and_the_syntax(spec):
    with pytest.raises(CorpusError, match=re.escape(repr(spec))) as e:
        parse_split(spec)
    assert "NAME[A%:B%]" in str(e.value)


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    loc = tmp_path_factory.mktemp("sub") / "feats.zarr"
    labels = ("sil", "a", "b", "c", "d")
    return make_feature_store(loc, labels=labels, per_split={"train": 10, "dev": 3},
                              num_mel_bins=8, frames=(20, 50))  # fmt: skip


def test_store_errors(fs):
    with pytest.raises(CorpusError, match=r"split 'nope\[:10%\]' is empty or unknown") as e:
        fs.indices("nope[:10%]")
    assert "train (10), dev (3)" in str(e.value) and "NAME[A%:B%]" in str(e.value)
    with pytest.raises(CorpusError, match=r"'train\[:4%\]' selects none of the 10 utterances"):
        fs.indices("train[:4%]")  # round(0.4) = 0 utterances
    with pytest.raises(CorpusError, match="train\\[10\\]"):
        fs.load_split("train[10]")


def test_labelled_data_and_load_split_on_a_subset(fs):
    from kdpipe.learn.data import LabelledData

    half = fs.indices("train[:50%]")
    assert len(half) == 5 and (np.diff(half) > 1).any()  # not contiguous: several reads
    rest = fs.indices("train[50%:]")
    assert sorted([*half, *rest]) == list(fs.indices("train"))
    data = LabelledData.from_store(fs, "train[:50%]")
    assert data.ids == [fs.ids[i] for i in half]
    for k, i in enumerate(half):
        np.testing.assert_array_equal(data.feats[k], fs.features(int(i)))
        np.testing.assert_array_equal(data.labels[k], fs.frame_labels(int(i)))
    clip = make_feature_store(task="clip", per_split={"train": 9, "dev": 2}, num_mel_bins=4)
    idx = clip.indices("train[30%:70%]")
    feats, labels = clip.load_split("train[30%:70%]")
    np.testing.assert_array_equal(labels, clip.clip_labels[idx])
    for f, i in zip(feats, idx, strict=True):
        np.testing.assert_array_equal(f, clip.features(int(i)))


def test_teach_and_the_kd_join_on_a_subset(fs, tmp_path):
    from kdpipe.essence import Rule
    from kdpipe.learn.compat import join_ids
    from kdpipe.learn.stream import TargetStream
    from kdpipe.store.reader import StoreReader
    from kdpipe.teach import single_teacher, teach
    from kdpipe.testing.teachers import make_teacher

    ckpt = make_teacher(tmp_path / "dnn", fs, "dnn", seed=1)
    out = tmp_path / "t.zarr"
    teach(single_teacher(ckpt, Rule("topk", {"k": 2})), fs.location, out,
          split="train[:50%]", progress=False)  # fmt: skip
    r = StoreReader(out)
    half = fs.indices("train[:50%]")
    assert sorted(r.ids) == sorted(fs.ids[i] for i in half)
    assert r.meta.extra["teach"]["selection"] == {"split": "train[:50%]"}
    _, fidx = join_ids(r, fs, "train[:50%]", allow_partial=False)
    assert sorted(fidx) == list(half)
    with pytest.raises(StoreError, match=r"covers 5 of the 10 utterances of split 'train'"):
        join_ids(r, fs, "train", allow_partial=False)
    _, fidx = join_ids(r, fs, "train[:20%]", allow_partial=False)  # nested: all covered
    assert len(fidx) == 2
    stream = TargetStream([str(out)], fs.location, "train[:50%]", level="frame")
    assert sorted(stream.table.fidx) == list(half)
