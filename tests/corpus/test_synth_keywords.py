"""``synth_keywords``: Speech Commands layout, speaker-disjoint splits, determinism."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import soundfile as sf

from kdpipe.corpus.readers import detect_format, read_corpus
from kdpipe.corpus.synth import KeywordSynthConfig, synth_keywords
from kdpipe.errors import ConfigError, SynthError
from kdpipe.testing.corpora import file_digests

WORDS = ("yes", "no", "stop")


def tiny(seed: int = 0, **kw) -> KeywordSynthConfig:
    values = {"seed": seed, "num_utts": 18, "num_voices": 6, "words": WORDS, **kw}
    return KeywordSynthConfig.from_dict(values)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("kw") / "out"
    # babble included: the bank is made once and shared by every clip
    summary = synth_keywords(out, tiny(noise_prob=1.0), jobs=1, progress=False)
    return out, summary


def test_layout_is_speech_commands(corpus):
    out, summary = corpus
    wavs = sorted(out.rglob("*.wav"))
    assert len(wavs) == 18 == summary.total and summary.dropped == {}
    assert {p.parent.name for p in wavs} == set(WORDS)
    for p in wavs:
        assert re.fullmatch(r"[0-9a-f]{8}_nohash_\d+\.wav", p.name)
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (
            16000,
            1,
            16000,
            "PCM_16",
        )
    listed = {}
    for split, name in (("dev", "validation_list.txt"), ("test", "testing_list.txt")):
        lines = (out / name).read_text().splitlines()
        assert lines == sorted(lines)
        for rel in lines:
            assert (out / rel).is_file() and not Path(rel).is_absolute()
            listed[rel] = split
    meta = json.loads((out / "synth.json").read_text())
    assert meta["complete"] and meta["config"]["seed"] == 0 and meta["words"] == list(WORDS)
    assert sum(meta["utterances"].values()) == 18 and len(meta["voices"]) == 6
    audio, _ = sf.read(str(wavs[0]), dtype="float32")
    assert 0.05 < abs(audio).max() <= 1.0


def test_reader_takes_it_and_splits_are_speaker_disjoint(corpus):
    out, summary = corpus
    assert detect_format(out) == "speech_commands"
    c = read_corpus(out)
    assert c.task == "clip" and set(c.labels.names) == set(WORDS)
    assert c.splits() == {k: v for k, v in summary.utterances.items() if v}
    speakers = {s: {u.speaker for u in c.split(s)} for s in ("train", "dev", "test")}
    assert all(speakers.values())  # every split has speakers
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["train"] & speakers["test"]
    assert not speakers["dev"] & speakers["test"]
    assert {k: len(v) for k, v in speakers.items()} == summary.speakers
    assert all(u.label == Path(u.audio).parent.name for u in c)


def test_same_seed_same_bytes_whatever_jobs(corpus, tmp_path):
    out, _ = corpus
    synth_keywords(tmp_path / "b", tiny(noise_prob=1.0), jobs=2, progress=False)
    assert file_digests(tmp_path / "b") == file_digests(out)
    synth_keywords(tmp_path / "c", tiny(seed=1, noise_prob=1.0), jobs=1, progress=False)
    other = file_digests(tmp_path / "c")
    assert set(other.values()).isdisjoint(
        v for k, v in file_digests(out).items() if k.endswith(".wav")
    )


def test_refuses_non_empty_output_unless_overwrite(tmp_path):
    (tmp_path / "mine.txt").write_text("keep me")
    with pytest.raises(SynthError, match=r"not empty.*--overwrite"):
        synth_keywords(tmp_path, tiny(), jobs=1, progress=False)
    with pytest.raises(SynthError, match="not a kdpipe synth output"):
        synth_keywords(tmp_path, tiny(), jobs=1, progress=False, overwrite=True)
    assert (tmp_path / "mine.txt").read_text() == "keep me"
    prev = tmp_path / "prev"
    small = {"num_utts": 3, "num_voices": 3, "noise_prob": 0.0}
    synth_keywords(prev, tiny(**small), jobs=1, progress=False)
    (prev / "stale").mkdir()
    synth_keywords(prev, tiny(seed=5, **small), jobs=1, progress=False, overwrite=True)
    assert not (prev / "stale").exists()
    assert json.loads((prev / "synth.json").read_text())["config"]["seed"] == 5


def test_config_is_validated():
    with pytest.raises(ConfigError, match="unknown key"):
        KeywordSynthConfig.from_dict({"num_utt": 3})
    with pytest.raises(ConfigError, match="lower-case"):
        tiny(words=("Yes",))
    with pytest.raises(ConfigError, match="noise_types"):
        tiny(noise_types=("brown",))
    with pytest.raises(ConfigError, match="size"):
        KeywordSynthConfig.for_size("huge")
    cfg = KeywordSynthConfig.for_size("medium", seed=3)
    assert (cfg.num_utts, cfg.num_voices, cfg.seed) == (12000, 400, 3)
    assert KeywordSynthConfig.from_dict(cfg.to_dict()) == cfg
