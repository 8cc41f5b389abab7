"""Transcribed corpora (transcripts, no labels): Kaldi data dirs with ``text`` only, the
store's ``texts`` column and fingerprint, and the one-line error for asking them for labels."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStore, FeatureStoreWriter
from kdpipe.corpus.features import FbankConfig, compute_fbank
from kdpipe.corpus.manifest import Corpus, Utterance
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import ConfigError, CorpusError, StoreError
from kdpipe.labels import LabelSet
from kdpipe.levels import task_level
from kdpipe.testing.corpora import make_kaldi_dir

TRANSCRIPTS_ONLY = r"has transcripts only \(no frame or clip labels\): align it first"


def table(path):
    return dict(line.split(maxsplit=1) for line in path.read_text().splitlines())


def test_kaldi_text_only_is_a_transcribed_corpus(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", alignment=None)
    corpus = read_corpus(root)
    assert (corpus.task, corpus.labels, corpus.alignments, corpus.external) == (
        "transcribed",
        None,
        None,
        None,
    )
    assert corpus.splits() == {"train": 2, "dev": 2, "test": 2}
    texts = {**table(root / "train" / "text"), **table(root / "dev" / "text")}
    for utt in corpus.split("train") + corpus.split("dev"):
        assert utt.text == texts[utt.id] and utt.audio and utt.label is None
    with pytest.raises(CorpusError, match=r"corpus .*k " + TRANSCRIPTS_ONLY):
        corpus.level  # noqa: B018
    with pytest.raises(CorpusError, match=TRANSCRIPTS_ONLY):
        corpus.label_set  # noqa: B018


def test_prepare_transcribed_store(tmp_path):
    """Features as for any audio corpus (the same fbank of the same wav), the transcripts
    kept, no labels; the store's level and labels fail with one line."""
    root = make_kaldi_dir(tmp_path / "k", alignment=None)
    summary = prepare_corpus(root, tmp_path / "s.zarr", jobs=1, progress=False)
    assert summary.task == "transcribed" and summary.num_utterances == 6
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert fs.task == "transcribed" and fs.fingerprint == summary.fingerprint
    texts = {}
    for split in ("train", "dev", "test"):
        texts |= table(root / split / "text")
    assert fs.texts == [texts[utt_id] for utt_id in fs.ids]
    assert fs.clip_labels is None and fs.external is None
    cfg = FbankConfig()
    first = load_audio(root / "wav" / f"{fs.ids[0]}.wav", cfg.sample_rate)
    np.testing.assert_array_equal(fs.raw_features(0), compute_fbank(first, cfg))
    for what in ("level", "labels"):
        with pytest.raises(CorpusError, match=TRANSCRIPTS_ONLY):
            getattr(fs, what)
    with pytest.raises(CorpusError, match=TRANSCRIPTS_ONLY):
        fs.load_split("train")
    with pytest.raises(CorpusError, match=TRANSCRIPTS_ONLY):
        fs.frame_labels(0)
    (feats, labels), *_ = fs.read_utterances(fs.indices("train"))
    assert labels is None and feats.shape == fs.raw_features(0).shape


def test_transcribed_fingerprint_covers_the_transcripts(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, alignment=None)
    a = prepare_corpus(root, tmp_path / "a.zarr", jobs=1, progress=False).fingerprint
    text = root / "text"
    text.write_text(text.read_text().replace(" a ", " b ", 1))
    b = prepare_corpus(root, tmp_path / "b.zarr", jobs=1, progress=False).fingerprint
    assert a != b
    assert (
        FeatureStore.open(tmp_path / "b.zarr").texts != FeatureStore.open(tmp_path / "a.zarr").texts
    )


def test_frame_and_clip_stores_keep_transcripts_unhashed(tmp_path):
    """A frame-task Kaldi dir keeps its ``text`` in the store; editing it leaves the
    fingerprint alone (fbank fingerprints are pinned in test_fingerprint_pins.py)."""
    root = make_kaldi_dir(tmp_path / "k", splits=None)
    a = prepare_corpus(root, tmp_path / "a.zarr", jobs=1, progress=False).fingerprint
    fs = FeatureStore.open(tmp_path / "a.zarr")
    assert fs.task == "frame" and fs.texts == [table(root / "text")[i] for i in fs.ids]
    (root / "text").write_text("")  # no transcripts at all: no column
    b = prepare_corpus(root, tmp_path / "b.zarr", jobs=1, progress=False).fingerprint
    assert a == b and FeatureStore.open(tmp_path / "b.zarr").texts is None


def test_empty_transcript_and_missing_ones(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, alignment=None)
    lines = (root / "text").read_text().splitlines()
    utt = lines[1].split()[0]
    (root / "text").write_text(f"{lines[0]}\n{utt}\n")
    with pytest.raises(CorpusError, match=rf"text:2: utterance {utt}: empty transcript"):
        read_corpus(root)
    corpus = read_corpus(root, skip_bad=True)
    assert len(corpus) == 1 and [u for u, _ in corpus.skipped] == [utt]
    summary = prepare_corpus(root, tmp_path / "s.zarr", jobs=1, progress=False, skip_bad=True)
    assert summary.num_utterances == 1 and summary.skipped[0][0] == utt
    assert FeatureStore.open(tmp_path / "s.zarr").skipped[0][0] == utt
    (root / "text").write_text(f"{lines[0]}\n")  # the second utterance has no line at all
    with pytest.raises(CorpusError, match=rf"utterance {utt} \(in .*wav\.scp\) has no entry in"):
        read_corpus(root)


def test_splits_must_agree_on_labels(tmp_path):
    root = make_kaldi_dir(tmp_path / "k")
    (root / "dev" / "ali.txt").unlink()
    with pytest.raises(CorpusError, match=r"some splits have labels .* and some only transcripts"):
        read_corpus(root)


def test_corpus_and_writer_invariants(tmp_path):
    utt = Utterance("u1", text="hello")
    with pytest.raises(CorpusError, match="a transcribed corpus takes no label set"):
        Corpus([utt], LabelSet(("a",)), "transcribed", "src", "kaldi")
    with pytest.raises(CorpusError, match="a frame corpus needs a label set"):
        Corpus([utt], None, "frame", "src", "kaldi")
    with pytest.raises(CorpusError, match="utterance u2 has no transcript"):
        Corpus([utt, Utterance("u2")], None, "transcribed", "src", "kaldi")
    with pytest.raises(ConfigError, match="'transcribed' has no label level"):
        task_level("transcribed")
    w = FeatureStoreWriter(
        tmp_path / "s.zarr", task="transcribed", labels=None, config=FbankConfig(num_mel_bins=3)
    )
    with pytest.raises(StoreError, match="utterance u1: a transcribed store needs a transcript"):
        w.add("u1", np.ones((4, 3), np.float32))
    w.add("u1", np.ones((4, 3), np.float32), text="hello world")
    w.close()
    fs = FeatureStore.open(tmp_path / "s.zarr")
    assert fs.texts == ["hello world"] and fs.attrs["labels"] == []


def test_cli_prepare_info_and_learn_on_a_transcribed_store(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", alignment=None)
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    r = runner.invoke(app, ["corpus", "prepare", str(root), "--out", store, "-j", "1"])
    assert r.exit_code == 0, r.output
    assert "transcribed corpus" in r.output
    r = runner.invoke(app, ["corpus", "info", store])
    assert r.exit_code == 0, r.output
    assert "transcribed corpus" in r.output and "transcripts: 6 of 6" in r.output
    assert "labels:" not in r.output
    args = ["learn", "--corpus", store, "--student", "dnn", "--out", str(tmp_path / "m")]
    r = runner.invoke(app, args)
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and "has transcripts only" in lines[0], r.output
    assert "Traceback" not in r.output
