"""``synth_phones``: Kaldi data dirs with frame labels (phones, states, tied triphones)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import soundfile as sf

from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.readers import detect_format, read_corpus
from kdpipe.corpus.synth import PHONES, PhoneSynthConfig, synth_phones
from kdpipe.corpus.synth.units import STATES
from kdpipe.errors import ConfigError, SynthError
from kdpipe.labels import LabelSet
from kdpipe.testing.corpora import file_digests

SPLITS = ("train", "dev", "test")


def tiny(seed: int = 0, **kw) -> PhoneSynthConfig:
    values = {"seed": seed, "num_utts": 12, "num_voices": 5, "max_words": 5, **kw}
    return PhoneSynthConfig.from_dict(values)


def table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("ph") / "out"
    return out, synth_phones(out, tiny(), jobs=1, progress=False)


def check_alignments(out: Path) -> dict[str, list[str]]:
    """Every ali line: one label per frame of its wav, all labels in labels.txt."""
    labels = LabelSet.read(out / "labels.txt")
    fb = FbankConfig()
    ali_all = {}
    for split in SPLITS:
        d = out / split
        wavs, ali = table(d / "wav.scp"), table(d / "ali.txt")
        assert list(wavs) == sorted(wavs) and set(ali) == set(wavs) == set(table(d / "text"))
        for utt, rel in wavs.items():
            assert not Path(rel).is_absolute() and (out / rel).is_file()
            frames = ali[utt].split()
            assert len(frames) == fb.num_frames(sf.info(str(out / rel)).frames)
            assert all(f in labels for f in frames)
            ali_all[utt] = frames
    return ali_all


def test_kaldi_dirs_with_frame_labels(corpus):
    out, summary = corpus
    ali = check_alignments(out)
    assert len(ali) == summary.total == 12 and summary.dropped == {}
    assert LabelSet.read(out / "labels.txt").names == PHONES
    for frames in ali.values():
        assert frames[0] == frames[-1] == "sil"  # padded with silence
        assert len(set(frames)) > 3
    for split in SPLITS:
        u2s, s2u = table(out / split / "utt2spk"), table(out / split / "spk2utt")
        assert all(utt.startswith(spk + "-") for utt, spk in u2s.items())
        assert sorted(u for utts in s2u.values() for u in utts.split()) == sorted(u2s)
    info = sf.info(str(next((out / "wav").glob("*.wav"))))
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    meta = json.loads((out / "synth.json").read_text())
    assert meta["complete"] and meta["units"] == "phones" and meta["num_labels"] == len(PHONES)


def test_reader_takes_it_and_splits_are_speaker_disjoint(corpus):
    out, summary = corpus
    assert detect_format(out) == "kaldi"
    c = read_corpus(out)
    assert c.task == "frame" and c.labels.names == PHONES
    speakers = {s: {u.speaker for u in c.split(s)} for s in SPLITS}
    assert {k: len(v) for k, v in speakers.items()} == summary.speakers
    assert all(speakers.values())
    assert not (speakers["train"] & speakers["dev"] or speakers["train"] & speakers["test"])
    assert not speakers["dev"] & speakers["test"]
    fb = FbankConfig()
    for u in c:
        assert len(c.alignments[u.id]) == fb.num_frames(sf.info(u.audio).frames)


def test_states_and_tied_triphones(tmp_path):
    synth_phones(tmp_path / "st", tiny(units="states"), jobs=1, progress=False)
    states = LabelSet.read(tmp_path / "st" / "labels.txt")
    assert len(states) == STATES * len(PHONES)
    ali = check_alignments(tmp_path / "st")
    assert all(f.rsplit("_", 1)[1] in {"1", "2", "3"} for fr in ali.values() for f in fr)

    base = STATES * len(PHONES)
    cfg = tiny(units="cd", num_states=base + 40, min_state_frames=1)
    synth_phones(tmp_path / "cd", cfg, jobs=1, progress=False)
    cd = LabelSet.read(tmp_path / "cd" / "labels.txt")
    assert len(cd) == base + 40  # enough distinct triphone states to reach the target
    assert cd.names[:base] == states.names  # monophone states first: the back-off
    ali = check_alignments(tmp_path / "cd")
    train = set(table(tmp_path / "cd" / "train" / "utt2spk"))
    used = {f for utt, fr in ali.items() if utt in train for f in fr}
    assert set(cd.names[base:]) <= used  # every tied state was seen in train

    big = tiny(units="cd", num_states=100_000, min_state_frames=2)
    synth_phones(tmp_path / "big", big, jobs=1, progress=False, overwrite=True)
    n = len(LabelSet.read(tmp_path / "big" / "labels.txt"))
    assert base + 40 < n < 100_000  # fewer: not enough triphone states reach 2 frames


def test_same_seed_same_bytes_whatever_jobs(corpus, tmp_path):
    out, _ = corpus
    stop = threading.Event()
    busy = threading.Thread(target=stop.wait)  # a running thread: workers are spawned, not forked
    busy.start()
    try:
        synth_phones(tmp_path / "b", tiny(), jobs=2, progress=False)
    finally:
        stop.set()
        busy.join()
    assert file_digests(tmp_path / "b") == file_digests(out)
    synth_phones(tmp_path / "c", tiny(seed=1), jobs=1, progress=False)
    assert file_digests(tmp_path / "c")["train/text"] != file_digests(out)["train/text"]


def test_sentences_from_a_text_file(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("Stop, right there!\n\nThe cat sat on the mat.\n")
    s = synth_phones(
        tmp_path / "out",
        tiny(num_utts=4, num_voices=3, text_file=str(text)),
        jobs=1,
        progress=False,
    )
    assert s.total == 4
    said = [
        line.split(" ", 1)[1]
        for d in SPLITS
        for line in (tmp_path / "out" / d / "text").read_text().splitlines()
    ]
    assert set(said) == {"Stop right there", "The cat sat on the mat"}
    check_alignments(tmp_path / "out")
    with pytest.raises(SynthError, match="text file not found"):
        synth_phones(tmp_path / "x", tiny(text_file=str(tmp_path / "nope.txt")), progress=False)


def test_config_is_validated():
    with pytest.raises(ConfigError, match="units"):
        tiny(units="words")
    with pytest.raises(ConfigError, match="num_states"):
        tiny(units="cd", num_states=10)
    with pytest.raises(ConfigError, match="3 voices"):
        tiny(num_voices=2)
    cfg = PhoneSynthConfig.for_size("large")
    assert (cfg.num_utts, cfg.num_voices) == (16000, 800)
    assert PhoneSynthConfig.from_dict(cfg.to_dict()) == cfg
