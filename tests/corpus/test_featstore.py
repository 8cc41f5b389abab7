"""The feature store: write/read round trip, CMVN on read, splits, fingerprint, errors."""

from __future__ import annotations

import numpy as np
import pytest

from kdpipe.corpus.featstore import FeatureStore, FeatureStoreWriter
from kdpipe.corpus.features import FbankConfig
from kdpipe.errors import CorpusError, StoreError, StoreFormatError
from kdpipe.labels import LabelSet
from kdpipe.testing.corpora import make_feature_store
from kdpipe.zarrio import open_group

F = 6
LABELS = LabelSet(("sil", "a", "b"))


def write_frame_store(path, rng, splits=("train", "dev", "train", "test", "train"), **kw):
    """Five utterances in interleaved splits, chunks of 16 frames (many chunk boundaries)."""
    w = FeatureStoreWriter(
        path,
        task="frame",
        labels=LABELS,
        config=FbankConfig(num_mel_bins=F, cmvn=kw.pop("cmvn", "none")),
        chunk_frames=16,
        **kw,
    )
    data = []
    for i, split in enumerate(splits):
        t = 7 + 9 * i
        feats = rng.normal(3 * i, 1 + i, size=(t, F)).astype(np.float32)
        labs = rng.integers(0, 3, size=t).astype(np.int32)
        w.add(f"u{i}", feats, speaker=f"s{i % 2}", split=split, frame_labels=labs, duration=t / 100)
        data.append((feats, labs))
    return w, w.close(skipped=[("bad1", "utterance bad1: audio file not found: x.wav")]), data


def test_round_trip_frame_task(tmp_path, rng):
    _, fp, data = write_frame_store(tmp_path / "s.zarr", rng)
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert (fs.task, fs.labels, fs.fingerprint, len(fs)) == ("frame", LABELS, fp, 5)
    assert fs.ids == [f"u{i}" for i in range(5)] and fs.speakers[:2] == ["s0", "s1"]
    assert fs.splits == ["train", "dev", "train", "test", "train"]
    assert fs.config == FbankConfig(num_mel_bins=F, cmvn="none") and fs.clip_labels is None
    np.testing.assert_array_equal(fs.num_frames, [7, 16, 25, 34, 43])
    assert fs.index_of("u3") == 3
    assert fs.skipped == [("bad1", "utterance bad1: audio file not found: x.wav")]
    for i, (feats, labs) in enumerate(data):
        np.testing.assert_array_equal(fs.features(i), feats)
        labels = fs.frame_labels(i)
        assert labels.dtype == np.int64
        np.testing.assert_array_equal(labels, labs)
    np.testing.assert_array_equal(fs.indices("train"), [0, 2, 4])
    feats, labels = fs.load_split("train")  # three runs: 0, 2, 4
    for k, i in enumerate([0, 2, 4]):
        np.testing.assert_array_equal(feats[k], data[i][0])
        np.testing.assert_array_equal(labels[k], data[i][1])
    assert fs.split_summary()["train"] == {
        "utterances": 3,
        "frames": 75,
        "speakers": 1,
        "hours": pytest.approx(0.75 / 3600),
    }


@pytest.mark.parametrize("gap", [0, 10, 10**6])
def test_read_utterances_in_runs_equals_one_by_one(tmp_path, rng, gap):
    """``read_utterances`` reads runs of nearby utterances in one slice each: whatever the
    gap, every utterance gets exactly its own raw features and labels."""
    _, _, data = write_frame_store(tmp_path / "s.zarr", rng)
    fs = FeatureStore.open(tmp_path / "s.zarr", cmvn="utterance")  # raw: no CMVN applied
    got = fs.read_utterances([0, 2, 3, 4], gap=gap)
    assert len(got) == 4
    for (feats, labels), i in zip(got, [0, 2, 3, 4], strict=True):
        np.testing.assert_array_equal(feats, data[i][0])
        np.testing.assert_array_equal(labels, data[i][1])
    assert fs.read_utterances([], gap=gap) == []


def test_cmvn_variants_on_read(tmp_path, rng):
    _, _, data = write_frame_store(tmp_path / "s.zarr", rng, cmvn="global")
    train = np.concatenate([data[i][0] for i in (0, 2, 4)]).astype(np.float64)
    glob = FeatureStore.open(tmp_path / "s.zarr")
    np.testing.assert_allclose(glob.cmvn_mean, train.mean(0), rtol=1e-5)
    np.testing.assert_allclose(glob.cmvn_std, train.std(0), rtol=1e-5)
    np.testing.assert_allclose(
        glob.features(3), (data[3][0] - train.mean(0)) / train.std(0), rtol=1e-4, atol=1e-5
    )
    utt = FeatureStore.open(tmp_path / "s.zarr", cmvn="utterance")
    x = utt.features(1)
    np.testing.assert_allclose(x.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(x.std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(utt.load_split("dev")[0][0], x)
    raw = FeatureStore.open(tmp_path / "s.zarr", cmvn="none")
    np.testing.assert_array_equal(raw.features(1), data[1][0])
    assert len({glob.fingerprint, utt.fingerprint, raw.fingerprint}) == 3


def test_clip_task_in_memory_store():
    fs = make_feature_store(task="clip", per_split={"train": 4, "test": 2}, num_mel_bins=8)
    assert fs.location.startswith("memory://") and fs.task == "clip"
    assert fs.clip_labels.dtype == np.int64
    np.testing.assert_array_equal(fs.clip_labels, [0, 1, 2, 3, 0, 1])
    feats, labels = fs.load_split("test")
    assert len(feats) == 2 and feats[0].shape[1] == 8
    np.testing.assert_array_equal(labels, [0, 1])
    with pytest.raises(CorpusError, match="clip-task store has no frame labels"):
        fs.frame_labels(0)
    assert FeatureStore.open(fs.location).fingerprint == fs.fingerprint


def test_unknown_split_names_the_known_ones():
    fs = make_feature_store(per_split={"train": 2, "dev": 1}, num_mel_bins=4)
    with pytest.raises(
        CorpusError,
        match=r"split 'test' is empty or unknown; known splits: "
        r"train \(2\), dev \(1\)",
    ):
        fs.indices("test")
    with pytest.raises(CorpusError, match="no utterance 'zz'"):
        fs.index_of("zz")


def test_fingerprint_is_stable_and_sensitive(tmp_path):
    def fp(name):
        return write_frame_store(tmp_path / name, np.random.default_rng(5))[1]

    a, b = fp("a.zarr"), fp("b.zarr")
    assert a == b
    w = FeatureStoreWriter(
        tmp_path / "c.zarr", task="clip", labels=LABELS, config=FbankConfig(num_mel_bins=F)
    )
    feats = np.ones((20, F), np.float32)
    w.add("x", feats, clip_label=1)
    c1 = w.close()
    feats[11, 3] += 0.5  # one value in the middle of the utterance
    w = FeatureStoreWriter(
        tmp_path / "d.zarr", task="clip", labels=LABELS, config=FbankConfig(num_mel_bins=F)
    )
    w.add("x", feats, clip_label=1)
    assert w.close() != c1


def test_open_errors(tmp_path):
    with pytest.raises(CorpusError, match="feature store not found"):
        FeatureStore.open(tmp_path / "nope.zarr")
    g = open_group(tmp_path / "other.zarr", mode="w")
    g.attrs["format"] = "kdpipe.targets"
    with pytest.raises(StoreFormatError, match="not a feature store"):
        FeatureStore.open(tmp_path / "other.zarr")
    write_frame_store(tmp_path / "s.zarr", np.random.default_rng(0))
    g = open_group(tmp_path / "s.zarr", mode="r+")
    g.attrs["version"] = 2
    with pytest.raises(StoreFormatError, match="version 2; this kdpipe reads version 1"):
        FeatureStore.open(tmp_path / "s.zarr")
    del g.attrs["format"]
    with pytest.raises(StoreFormatError, match="incomplete feature store"):
        FeatureStore.open(tmp_path / "s.zarr")


def test_writer_refuses_to_clobber(tmp_path, rng):
    write_frame_store(tmp_path / "s.zarr", rng)
    with pytest.raises(StoreError, match="already exists; pass --overwrite"):
        write_frame_store(tmp_path / "s.zarr", rng)
    write_frame_store(tmp_path / "s.zarr", rng, overwrite=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "keep.txt").write_text("precious")
    with pytest.raises(StoreError, match="not a Zarr store; refusing"):
        write_frame_store(tmp_path / "docs", rng, overwrite=True)
    assert (tmp_path / "docs" / "keep.txt").read_text() == "precious"
    w = FeatureStoreWriter(
        tmp_path / "e.zarr", task="frame", labels=LABELS, config=FbankConfig(num_mel_bins=F)
    )
    with pytest.raises(StoreError, match="utterance x: need 4 frame labels"):
        w.add("x", np.zeros((4, F), np.float32), frame_labels=np.zeros(3, np.int32))
    with pytest.raises(StoreError, match=r"utterance y: features of shape \(0, 6\)"):
        w.add("y", np.zeros((0, F), np.float32), frame_labels=np.zeros(0, np.int32))
