"""prepare: corpus -> feature store, alignment checks, bad input, and the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.features import FbankConfig, compute_fbank
from kdpipe.corpus.prepare import fix_alignment, prepare_corpus
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import AlignmentError, AudioError, CorpusError
from kdpipe.testing.corpora import make_hdf5_archive, make_kaldi_dir, make_speech_commands

RAW = FbankConfig(cmvn="none")


def test_speech_commands_features_equal_direct_computation(tmp_path):
    root = make_speech_commands(tmp_path / "sc", labels=("no", "yes"))
    s = prepare_corpus(root, tmp_path / "f.zarr", features=RAW, jobs=1, progress=False)
    assert (s.task, s.num_utterances, s.splits) == ("clip", 8, {"train": 4, "dev": 2, "test": 2})
    fs = FeatureStore.open(tmp_path / "f.zarr")
    assert fs.fingerprint == s.fingerprint and fs.attrs["source_format"] == "speech_commands"
    assert fs.splits == ["train"] * 4 + ["dev"] * 2 + ["test"] * 2  # grouped by split
    i = fs.index_of("yes/0a1b2c3d_nohash_0")
    wave = load_audio(root / "yes" / "0a1b2c3d_nohash_0.wav", 16000)
    np.testing.assert_array_equal(fs.features(i), compute_fbank(wave, RAW))
    assert fs.clip_labels[i] == 1 and fs.durations[i] == pytest.approx(0.5)
    assert s.hours == pytest.approx(8 * 0.5 / 3600)


def test_kaldi_frame_labels_and_jobs_do_not_change_the_store(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", utts_per_split=3)
    corpus = read_corpus(root)
    one = prepare_corpus(root, tmp_path / "one.zarr", jobs=1, progress=False)
    two = prepare_corpus(root, tmp_path / "two.zarr", jobs=2, progress=False)
    assert two.jobs == 2 and one.fingerprint == two.fingerprint
    a, b = FeatureStore.open(tmp_path / "one.zarr"), FeatureStore.open(tmp_path / "two.zarr")
    assert a.ids == b.ids
    for i, uid in enumerate(a.ids):
        np.testing.assert_array_equal(a.features(i), b.features(i))
        np.testing.assert_array_equal(a.frame_labels(i), corpus.alignments[uid])


def test_fix_alignment_tolerance():
    ali = np.array([0, 1, 1, 2], dtype=np.int32)
    np.testing.assert_array_equal(fix_alignment(ali, 2, "u"), [0, 1])
    np.testing.assert_array_equal(fix_alignment(ali, 6, "u"), [0, 1, 1, 2, 2, 2])
    assert fix_alignment(ali, 4, "u") is ali
    with pytest.raises(
        AlignmentError,
        match=r"utterance u .*: alignment has 4 frames but the "
        "features have 7; more than 2 apart",
    ):
        fix_alignment(ali, 7, "u", "x.wav")


def _edit_alignment(path, line, delta):
    lines = path.read_text().splitlines()
    toks = lines[line].split()
    toks = toks + [toks[-1]] * delta if delta > 0 else toks[: len(toks) + delta]
    lines[line] = " ".join(toks)
    path.write_text("\n".join(lines) + "\n")
    return toks[0]


def test_alignment_off_by_two_is_fixed_off_by_three_is_an_error(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, utts_per_split=3)
    ali = root / "ali.txt"
    long_id, short_id = _edit_alignment(ali, 0, 2), _edit_alignment(ali, 1, -2)
    prepare_corpus(root, tmp_path / "ok.zarr", jobs=1, progress=False)
    fs = FeatureStore.open(tmp_path / "ok.zarr")
    for uid in (long_id, short_id):
        i = fs.index_of(uid)
        assert len(fs.frame_labels(i)) == fs.num_frames[i]
    bad_id = _edit_alignment(ali, 2, 3)
    with pytest.raises(
        AlignmentError,
        match=rf"utterance {bad_id} \(.*{bad_id}\.wav\): alignment "
        r"has \d+ frames but the features have \d+",
    ):
        prepare_corpus(root, tmp_path / "bad.zarr", jobs=1, progress=False)
    assert not (tmp_path / "bad.zarr").exists()  # no half-written store left behind
    s = prepare_corpus(root, tmp_path / "skip.zarr", jobs=1, skip_bad=True, progress=False)
    assert s.num_utterances == 2 and [u for u, _ in s.skipped] == [bad_id]
    assert FeatureStore.open(tmp_path / "skip.zarr").skipped == s.skipped


@pytest.mark.parametrize("damage", ["corrupt", "empty", "too_short"])
def test_bad_audio_names_utterance_and_file_or_is_skipped(tmp_path, damage):
    root = make_speech_commands(tmp_path / "sc", labels=("no", "yes"))
    wav = root / "no" / "4e5f6a7b_nohash_0.wav"
    if damage == "corrupt":
        wav.write_bytes(b"RIFF....WAVEfmt garbage")
        msg = "cannot read audio file"
    elif damage == "empty":
        wav.write_bytes(wav.read_bytes()[:44])  # header only: zero samples
        msg = "is empty"
    else:
        import soundfile as sf

        sf.write(str(wav), np.zeros(200, np.float32), 16000)  # shorter than one 25 ms window
        msg = "too short for one frame"
    with pytest.raises(AudioError, match=rf"utterance no/4e5f6a7b_nohash_0: .*{msg}"):
        prepare_corpus(root, tmp_path / "f.zarr", jobs=1, progress=False)
    s = prepare_corpus(root, tmp_path / "f.zarr", jobs=1, skip_bad=True, progress=False)
    assert s.num_utterances == 7 and s.skipped[0][0] == "no/4e5f6a7b_nohash_0"
    assert "4e5f6a7b_nohash_0.wav" in s.skipped[0][1]


def test_everything_skipped_is_an_error(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None)
    for w in (root / "wav").glob("*.wav"):
        w.write_bytes(b"junk")
    with pytest.raises(CorpusError, match="all 2 utterances were skipped; first: utterance"):
        prepare_corpus(root, tmp_path / "f.zarr", jobs=1, skip_bad=True, progress=False)
    assert not (tmp_path / "f.zarr").exists()


def test_hdf5_features_are_copied_with_the_file_config(tmp_path):
    path = make_hdf5_archive(tmp_path / "a.h5", num_mel_bins=13)
    s = prepare_corpus(path, tmp_path / "f.zarr", features=RAW, progress=False)
    fs = FeatureStore.open(tmp_path / "f.zarr")
    assert s.num_utterances == 8 and fs.config == FbankConfig(num_mel_bins=13, cmvn="none")
    with h5py.File(path) as f:
        for i, uid in enumerate(fs.ids):
            np.testing.assert_array_equal(fs.features(i), f[uid][()])
    assert fs.splits[:4] == ["train"] * 4


# --- CLI -------------------------------------------------------------------------------


def test_cli_prepare_and_info(tmp_path):
    root = make_kaldi_dir(tmp_path / "k")
    out = tmp_path / "f.zarr"
    r = CliRunner().invoke(
        app,
        [
            "corpus",
            "prepare",
            str(root),
            "--out",
            str(out),
            "--num-mel-bins",
            "24",
            "--cmvn",
            "global",
            "--jobs",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "6 utterances (train 2, dev 2, test 2)" in r.stdout and "fingerprint" in r.stdout
    fs = FeatureStore.open(out)
    assert fs.config.num_mel_bins == 24 and fs.config.cmvn == "global"
    r = CliRunner().invoke(app, ["corpus", "info", str(out)])
    assert r.exit_code == 0, r.output
    for text in ("frame task", "train", "dev", "test", "labels: 3 (sil, a, b)", fs.fingerprint):
        assert text in r.stdout
    r = CliRunner().invoke(app, ["corpus", "prepare", str(root), "--out", str(out)])
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr


def test_cli_skip_bad_reports_skipped(tmp_path):
    root = make_speech_commands(tmp_path / "sc", labels=("no", "yes"))
    (root / "yes" / "0a1b2c3d_nohash_0.wav").write_bytes(b"junk")
    r = CliRunner().invoke(
        app,
        [
            "corpus",
            "prepare",
            str(root),
            "--out",
            str(tmp_path / "f.zarr"),
            "--skip-bad",
            "--jobs",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "skipped 1 bad utterance(s)" in r.stderr and "yes/0a1b2c3d_nohash_0" in r.stderr
    r = CliRunner().invoke(app, ["corpus", "info", str(tmp_path / "f.zarr")])
    assert "skipped: 1" in r.stdout


def test_cli_bad_input_is_one_line_and_exit_1(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None)
    (root / "wav" / "all-spk1-u1.wav").unlink()
    cmd = [
        sys.executable,
        "-m",
        "kdpipe.cli.main",
        "corpus",
        "prepare",
        str(root),
        "--out",
        str(tmp_path / "f.zarr"),
    ]
    env = {**os.environ, "COLUMNS": "300"}
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert lines[0].startswith("error: ") and "utterance all-spk1-u1" in lines[0]
    assert "wav.scp:2" in lines[0] and "audio file not found" in lines[0]
