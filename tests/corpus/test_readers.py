"""Readers: Speech Commands folders, Kaldi data dirs, HDF5 archives, format detection."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from kdpipe.corpus.readers import detect_format, read_corpus
from kdpipe.errors import AlignmentError, AudioError, CorpusError
from kdpipe.testing.corpora import (
    make_hdf5_archive,
    make_kaldi_dir,
    make_speech_commands,
    tone,
    write_wav,
)

# --- Speech Commands -------------------------------------------------------------------


def test_speech_commands_layout(tmp_path):
    root = make_speech_commands(tmp_path / "sc")
    assert detect_format(root) == "speech_commands"
    c = read_corpus(root)
    assert c.task == "clip" and c.format == "speech_commands" and c.alignments is None
    assert c.labels.names == ("no", "up", "yes")
    assert c.splits() == {"train": 6, "dev": 3, "test": 3}
    u = next(u for u in c if u.id == "yes/8c9d0e1f_nohash_0")
    assert (u.label, u.speaker, u.split) == ("yes", "8c9d0e1f", "dev")
    assert u.audio == str(root / "yes" / "8c9d0e1f_nohash_0.wav")
    assert not any("_background_noise_" in u.id for u in c)
    assert {u.split for u in c if u.speaker == "a2b3c4d5"} == {"test"}


def test_speech_commands_list_naming_a_missing_wav(tmp_path):
    root = make_speech_commands(tmp_path / "sc", labels=("no", "yes"))
    with open(root / "testing_list.txt", "a") as f:
        f.write("yes/ffffffff_nohash_0.wav\n")
    with pytest.raises(CorpusError, match=r"testing_list\.txt: lists yes/ffffffff_nohash_0\.wav"):
        read_corpus(root)
    c = read_corpus(root, skip_bad=True)
    assert len(c) == 8 and c.skipped[0][0] == "yes/ffffffff_nohash_0.wav"


# --- Kaldi -----------------------------------------------------------------------------


@pytest.mark.parametrize("alignment", ["txt", "txt-int", "ark", "scp"])
def test_kaldi_split_dirs_all_alignment_kinds(tmp_path, alignment):
    root = make_kaldi_dir(tmp_path / "k", alignment=alignment, seed=3)
    assert detect_format(root) == "kaldi"
    c = read_corpus(root)
    assert c.task == "frame" and c.labels.names == ("sil", "a", "b")
    assert c.splits() == {"train": 2, "dev": 2, "test": 2}
    u = c.utterances[0]
    assert (u.id, u.speaker, u.split) == ("train-spk0-u0", "spk0", "train")
    assert u.audio == str(root / "wav" / "train-spk0-u0.wav")  # via the parent
    assert u.text and u.text.split()[0] == "sil"
    ref = read_corpus(make_kaldi_dir(tmp_path / "ref", seed=3))
    for uid, ali in ref.alignments.items():
        np.testing.assert_array_equal(c.alignments[uid], ali)


def test_kaldi_single_dir_with_segments_and_split_name(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, segments=True, utts_per_split=3)
    c = read_corpus(root, split="dev")
    assert c.splits() == {"dev": 3}
    u0, u1 = c.utterances[:2]
    assert u0.audio == u1.audio == str(root / "wav" / "all-rec.wav")
    assert u0.start == 0.0 and u1.start == u0.end


def test_kaldi_labels_from_alignment_without_labels_txt(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", labels=("sil", "zz", "aa"), labels_file=False)
    assert read_corpus(root).labels.names == ("aa", "sil", "zz")
    root = make_kaldi_dir(tmp_path / "k2", alignment="txt-int", labels_file=False)
    with pytest.raises(CorpusError, match=r"integer indices; add a labels\.txt"):
        read_corpus(root)


def test_kaldi_piped_wav_scp_is_refused(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None)
    scp = root / "wav.scp"
    first = scp.read_text().splitlines()[0].split()[0]
    scp.write_text(
        f"{first} sox in.flac -t wav - |\n" + "".join(scp.read_text().splitlines(True)[1:])
    )
    with pytest.raises(AudioError, match=rf"wav\.scp:1: utterance {first}: piped commands"):
        read_corpus(root)


def test_kaldi_wav_scp_pointing_nowhere(tmp_path):
    root = make_kaldi_dir(tmp_path / "k")
    (root / "wav" / "dev-spk1-u1.wav").unlink()
    with pytest.raises(AudioError, match=r"dev/wav\.scp:2: utterance dev-spk1-u1: audio file not"):
        read_corpus(root)
    c = read_corpus(root, skip_bad=True)
    assert len(c) == 5 and [s[0] for s in c.skipped] == ["dev-spk1-u1"]
    assert "dev-spk1-u1" not in c.alignments


def test_kaldi_ids_must_agree_between_wav_scp_and_alignment(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, utts_per_split=3)
    ali = root / "ali.txt"
    lines = ali.read_text().splitlines(True)
    ali.write_text("".join(lines[1:]) + "ghost-utt sil sil a\n")
    with pytest.raises(CorpusError, match=r"utterance all-spk0-u0 .* has no entry in .*ali\.txt"):
        read_corpus(root)
    c = read_corpus(root, skip_bad=True)
    reasons = dict(c.skipped)
    assert set(reasons) == {"all-spk0-u0", "ghost-utt"}
    assert "ghost-utt is not in" in reasons["ghost-utt"] and "wav.scp" in reasons["ghost-utt"]
    assert len(c) == 2


@pytest.mark.parametrize(
    ("kind", "bad", "msg"),
    [
        ("txt", "zz", r"utterance all-spk1-u1: label 'zz' is not in the label set"),
        ("txt-int", "7", r"utterance all-spk1-u1: label index 7 is outside the label set"),
    ],
)
def test_kaldi_labels_outside_label_set(tmp_path, kind, bad, msg):
    root = make_kaldi_dir(tmp_path / "k", splits=None, alignment=kind)
    ali = root / "ali.txt"
    lines = ali.read_text().splitlines()
    lines[1] = lines[1] + f" {bad}"
    ali.write_text("\n".join(lines) + "\n")
    with pytest.raises(AlignmentError, match=msg):
        read_corpus(root)
    c = read_corpus(root, skip_bad=True)
    assert [s[0] for s in c.skipped] == ["all-spk1-u1"] and len(c) == 1


def test_kaldi_utt2label_gives_clip_task_and_no_labels_is_an_error(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, labels_file=False)
    (root / "ali.txt").unlink()
    (root / "text").unlink()  # with its transcripts it would be a transcribed corpus
    with pytest.raises(CorpusError, match=r"no frame alignment .* and no utt2label"):
        read_corpus(root)
    (root / "utt2label").write_text("all-spk0-u0 yes\nall-spk1-u1 no\n")
    c = read_corpus(root)
    assert c.task == "clip" and c.labels.names == ("no", "yes")
    assert [u.label for u in c] == ["yes", "no"]


def test_kaldi_corrupt_ark(tmp_path):
    root = make_kaldi_dir(tmp_path / "k", splits=None, alignment="ark")
    (root / "ali.ark").write_bytes(b"garbage that is not an ark")
    with pytest.raises(CorpusError, match=r"ali\.ark: not a readable Kaldi archive"):
        read_corpus(root)
    # an ali.scp entry must name an existing ark file: no shell pipes
    root = make_kaldi_dir(tmp_path / "k2", splits=None, alignment="scp")
    (root / "ali.scp").write_text("all-spk0-u0 gunzip -c ali.ark.gz |\n")
    with pytest.raises(CorpusError, match=r"ali\.scp:1: expected '<utt> <ark file>:<offset>'"):
        read_corpus(root)


# --- HDF5 ------------------------------------------------------------------------------


def test_hdf5_frame_archive(tmp_path):
    path = make_hdf5_archive(tmp_path / "f.h5")
    assert detect_format(path) == "hdf5"
    c = read_corpus(path)
    assert c.task == "frame" and c.format == "hdf5" and c.labels.names == ("sil", "a", "b")
    assert c.splits() == {"dev": 2, "test": 2, "train": 4}
    with h5py.File(path) as f:
        for u in c:
            assert u.features == u.id and u.audio is None
            assert len(c.alignments[u.id]) == f[u.id].shape[0]
        np.testing.assert_array_equal(c.alignments["train/utt1"], f["train/utt1.alignment"][()])
        np.testing.assert_array_equal(
            c.alignments["train/utt0"], f["train/utt0"].attrs["alignment"]
        )


def test_hdf5_clip_archive_and_bad_labels(tmp_path):
    path = make_hdf5_archive(tmp_path / "c.h5", task="clip")
    c = read_corpus(path)
    assert c.task == "clip" and c.alignments is None
    assert {u.label for u in c} == {"sil", "a", "b"}
    with h5py.File(path, "a") as f:
        f["dev/utt1"].attrs["label"] = "nope"
    with pytest.raises(AlignmentError, match=r"c\.h5:dev/utt1: label 'nope' is not in the label"):
        read_corpus(path)
    assert [s[0] for s in read_corpus(path, skip_bad=True).skipped] == ["dev/utt1"]


def test_hdf5_without_labels_and_non_hdf5(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("u1", data=np.zeros((3, 40), np.float32))
    with pytest.raises(CorpusError, match="no 'labels' file attribute"):
        read_corpus(path)
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(CorpusError, match=r"junk\.h5: not a readable HDF5 file"):
        read_corpus(tmp_path / "junk.h5")


# --- detection -------------------------------------------------------------------------


def test_detection_errors_and_override(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="cannot tell the corpus format; known formats"):
        detect_format(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(CorpusError, match=r"not \.h5/\.hdf5"):
        read_corpus(tmp_path / "notes.txt")
    with pytest.raises(CorpusError, match="corpus not found"):
        read_corpus(tmp_path / "missing")
    with pytest.raises(CorpusError, match="unknown corpus format 'wav2vec'"):
        read_corpus(tmp_path / "empty", format="wav2vec")
    # a folder of label dirs is read as Kaldi when asked, and says what is missing
    write_wav(tmp_path / "sc" / "yes" / "a_nohash_0.wav", tone(300, 0.2))
    assert detect_format(tmp_path / "sc") == "speech_commands"
    with pytest.raises(CorpusError, match=r"no wav\.scp"):
        read_corpus(tmp_path / "sc", format="kaldi")
