"""Kaldi's own features (``feats.scp``, ``cmvn.scp`` per speaker) taken into a feature
store as they are, checked against direct kaldiio reads and Kaldi's apply-cmvn formula."""

from __future__ import annotations

import hashlib

import kaldiio
import numpy as np
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.features import FbankConfig, compute_fbank
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.readers import detect_format, read_corpus
from kdpipe.corpus.readers.kaldi_feats import apply_cmvn_stats
from kdpipe.errors import CorpusError
from kdpipe.testing.corpora import make_kaldi_dir, make_kaldi_feats_dir


def kaldi_reads(root, split):
    """{utt: matrix}, {speaker: stats} and {utt: speaker} as kaldiio reads them, from the
    folder the scp paths are relative to."""
    d = root / split
    feats = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(d / "feats.scp")).items()}
    stats = {}
    if (d / "cmvn.scp").is_file():
        stats = {k: np.asarray(v) for k, v in kaldiio.load_scp(str(d / "cmvn.scp")).items()}
    spk = dict(line.split() for line in (d / "utt2spk").read_text().splitlines())
    return feats, stats, spk


def reference_cmvn(feats, stats, norm_vars):
    """Kaldi's ApplyCmvn, written out: x - mean, or (x - mean) / std."""
    dim = stats.shape[1] - 1
    count = stats[0, dim]
    mean = stats[0, :dim] / count
    if not norm_vars:
        return feats - mean
    std = np.sqrt(stats[1, :dim] / count - mean**2)
    return (feats - mean) / std


def prepare(src, out, **kw):
    return prepare_corpus(src, out, jobs=1, progress=False, **kw)


@pytest.mark.parametrize(("norm_vars", "compress"), [(False, False), (True, False), (False, True)])
def test_feats_scp_with_cmvn_equals_kaldiio_and_apply_cmvn(
    tmp_path, monkeypatch, norm_vars, compress
):
    root = make_kaldi_feats_dir(tmp_path / "k", compress=compress)
    assert detect_format(root) == "kaldi"
    out = tmp_path / "s.zarr"
    summary = prepare(root, out, norm_vars=norm_vars, features=FbankConfig(cmvn="none"))
    assert summary.task == "transcribed" and summary.num_utterances == 12
    fs = FeatureStore.open(out)
    monkeypatch.chdir(root)  # the scp files' paths are relative to here, as in a Kaldi setup
    checked = 0
    for split in ("train", "dev", "test"):
        feats, stats, spk = kaldi_reads(root.relative_to(root), split)
        texts = dict(
            line.split(maxsplit=1) for line in (root / split / "text").read_text().splitlines()
        )
        for utt, matrix in feats.items():
            i = fs.index_of(utt)
            want = reference_cmvn(matrix.astype(np.float32), stats[spk[utt]], norm_vars)
            np.testing.assert_allclose(fs.raw_features(i), want, rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(fs.features(i), want, rtol=1e-5, atol=1e-5)  # cmvn none
            assert fs.texts is not None and fs.texts[i] == texts[utt]
            assert fs.speakers[i] == spk[utt] and fs.splits[i] == split
            checked += 1
    assert checked == len(fs) == 12
    assert fs.config == FbankConfig(num_mel_bins=13, cmvn="none")
    ext = fs.external
    assert ext is not None and (ext["kind"], ext["dim"]) == ("kaldi", 13)
    assert ext["config"] == {"cmvn": {"norm_vars": norm_vars, "per": "speaker"}}
    scp = (root / "train" / "feats.scp").read_bytes()
    assert ext["source"]["train"]["feats.scp"] == hashlib.sha256(scp).hexdigest()
    assert set(ext["source"]["dev"]) == {"feats.scp", "cmvn.scp"}
    assert len(ext["fingerprint"]) == 16
    assert fs.feature_fingerprint != fs.config.fingerprint


def test_apply_cmvn_stats_is_kaldis(rng):
    feats = rng.normal(5, 2, size=(30, 4)).astype(np.float32)
    stats = np.zeros((2, 5))
    stats[0, :4], stats[0, 4], stats[1, :4] = (
        feats.sum(0),
        30,
        np.square(feats, dtype=np.float64).sum(0),
    )
    mean_only = apply_cmvn_stats(feats, stats)
    assert mean_only.dtype == np.float32
    np.testing.assert_allclose(mean_only.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(mean_only.std(0), feats.std(0), rtol=1e-5)
    both = apply_cmvn_stats(feats, stats, norm_vars=True)
    np.testing.assert_allclose(both.std(0), 1, rtol=1e-4)
    constant = np.zeros((2, 5))
    constant[0, :4], constant[0, 4], constant[1, :4] = 3.0 * 30, 30, 9.0 * 30
    assert np.isfinite(apply_cmvn_stats(np.full((2, 4), 3, np.float32), constant, True)).all()


def test_feats_scp_without_cmvn_is_taken_as_it_is(tmp_path, monkeypatch):
    root = make_kaldi_feats_dir(tmp_path / "k", splits=None, cmvn=False)
    fs = FeatureStore.open(prepare(root, tmp_path / "s.zarr", split="dev").location)
    monkeypatch.chdir(root.parent)
    feats = kaldiio.load_scp(f"{root.name}/feats.scp")
    for utt in feats:
        np.testing.assert_array_equal(fs.raw_features(fs.index_of(utt)), feats[utt])
    assert fs.splits == ["dev"] * 4 and fs.external is not None
    assert fs.external["config"] == {"cmvn": None}
    assert set(fs.external["source"]["dev"]) == {"feats.scp"}


def test_feature_fingerprint_is_what_the_features_are_not_which(tmp_path):
    """Two splits' features of one Kaldi setup, prepared apart, are of one kind (a model of
    one fits the other); with variance normalisation they are of another."""
    root = make_kaldi_feats_dir(tmp_path / "k")
    a = FeatureStore.open(prepare(root / "train", tmp_path / "a.zarr").location)
    b = FeatureStore.open(prepare(root / "test", tmp_path / "b.zarr", split="test").location)
    c = FeatureStore.open(prepare(root / "test", tmp_path / "c.zarr", norm_vars=True).location)
    assert a.fingerprint != b.fingerprint
    assert a.external["fingerprint"] != b.external["fingerprint"]  # type: ignore[index]
    assert a.feature_fingerprint == b.feature_fingerprint != c.feature_fingerprint


def write_fbank_feats(root, cfg):
    """feats.scp of the fbank of every wav.scp entry (a Kaldi dir with both), with kaldiio."""
    mats = {}
    for line in (root / "wav.scp").read_text().splitlines():
        utt, path = line.split()
        mats[utt] = compute_fbank(load_audio(root / path, cfg.sample_rate), cfg) + 1.0
    kaldiio.save_ark(str(root / "feats.ark"), mats, scp=str(root / "feats.scp"))
    return mats


def test_feature_source_with_audio_and_feats_scp(tmp_path):
    """A data dir with both: ``auto`` keeps reading the audio (the fingerprint is the one
    it always was), ``stored`` takes feats.scp, for a frame task too (alignments fitted to
    the matrices' frames)."""
    root = make_kaldi_dir(tmp_path / "k", splits=None)
    before = prepare(root, tmp_path / "before.zarr").fingerprint
    mats = write_fbank_feats(root, FbankConfig())
    auto = prepare(root, tmp_path / "auto.zarr")
    assert auto.fingerprint == before
    assert FeatureStore.open(auto.location).external is None
    stored = prepare(root, tmp_path / "stored.zarr", feature_source="stored")
    fs = FeatureStore.open(stored.location)
    assert fs.task == "frame" and fs.external is not None and fs.external["kind"] == "kaldi"
    for utt, matrix in mats.items():
        i = fs.index_of(utt)
        np.testing.assert_array_equal(fs.raw_features(i), matrix)
        assert len(fs.frame_labels(i)) == len(matrix)
    assert stored.fingerprint != before
    audio_only = make_kaldi_dir(tmp_path / "a", splits=None)
    with pytest.raises(CorpusError, match=r"no feats\.scp: no stored features"):
        read_corpus(audio_only, feature_source="stored")
    feats_only = make_kaldi_feats_dir(tmp_path / "f", splits=None)
    with pytest.raises(CorpusError, match=r"no wav\.scp, so no audio"):
        read_corpus(feats_only, feature_source="audio")
    with pytest.raises(CorpusError, match="feature source must be auto, audio or stored"):
        read_corpus(feats_only, feature_source="feats")
    sc = tmp_path / "a.h5"
    sc.write_bytes(b"")
    with pytest.raises(CorpusError, match="a hdf5 corpus has stored features only"):
        read_corpus(sc, feature_source="audio")


def test_matrices_of_another_dimension(tmp_path):
    root = make_kaldi_feats_dir(tmp_path / "k", splits=None, cmvn=False)
    lines = (root / "feats.scp").read_text().splitlines()
    odd = lines[2].split()[0]
    kaldiio.save_ark(str(root / "odd.ark"), {odd: np.zeros((9, 7), np.float32)})
    lines[2] = f"{odd} odd.ark:{len(odd) + 1}"
    (root / "feats.scp").write_text("\n".join(lines) + "\n")
    with pytest.raises(
        CorpusError,
        match=rf"feats\.scp:3: utterance {odd}: a matrix of 7 columns; the first matrix of "
        r"feats\.scp has 13",
    ):
        prepare(root, tmp_path / "s.zarr")
    assert not (tmp_path / "s.zarr").exists()
    summary = prepare(root, tmp_path / "s.zarr", skip_bad=True)
    assert summary.num_utterances == 3 and [u for u, _ in summary.skipped] == [odd]
    assert FeatureStore.open(tmp_path / "s.zarr").skipped[0][0] == odd


def test_cmvn_speaker_missing_or_bad(tmp_path):
    root = make_kaldi_feats_dir(tmp_path / "k", splits=None)
    cmvn = root / "cmvn.scp"
    lines = cmvn.read_text().splitlines()
    gone = lines[1].split()[0]  # all-spk1
    cmvn.write_text(lines[0] + "\n")
    with pytest.raises(CorpusError, match=rf"cmvn\.scp: no CMVN stats for speaker '{gone}'"):
        read_corpus(root)
    corpus = read_corpus(root, skip_bad=True)
    assert {u for u, _ in corpus.skipped} == {"all-spk1-u1", "all-spk1-u3"} and len(corpus) == 2
    kaldiio.save_ark(str(root / "bad.ark"), {gone: np.zeros((2, 5))})
    cmvn.write_text(f"{lines[0]}\n{gone} bad.ark:{len(gone) + 1}\n")
    with pytest.raises(CorpusError, match=rf"cmvn\.scp:2: speaker {gone}: stats of shape \(2, 5\)"):
        read_corpus(root)
    cmvn.write_text(f"{lines[0]}\n{gone} gunzip -c cmvn.ark.gz |\n")
    with pytest.raises(CorpusError, match=r"cmvn\.scp:2: expected '<utt> <ark file>:<offset>'"):
        read_corpus(root)


def test_unreadable_matrix_names_its_line(tmp_path):
    root = make_kaldi_feats_dir(tmp_path / "k", splits=None, cmvn=False)
    lines = (root / "feats.scp").read_text().splitlines()
    utt, rx = lines[1].split()
    lines[1] = f"{utt} {rx.rsplit(':', 1)[0]}:3"  # an offset into the middle of a matrix
    (root / "feats.scp").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=rf"feats\.scp:2: utterance {utt}: "):
        prepare(root, tmp_path / "s.zarr")


def test_cli_prepare_stored_features_and_info(tmp_path):
    root = make_kaldi_feats_dir(tmp_path / "k")
    store = str(tmp_path / "s.zarr")
    runner = CliRunner()
    args = ["corpus", "prepare", str(root), "-o", store, "--feature-source", "stored"]
    r = runner.invoke(app, [*args, "--norm-vars", "--cmvn", "none"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["corpus", "info", store])
    assert r.exit_code == 0, r.output
    assert "transcribed corpus" in r.output and "external (kaldi: dim=13" in r.output
    assert "'norm_vars': True" in r.output
