"""``synth_phones(labels="aligned")``: a transcribed corpus with its truth kept apart.

The split folders hold transcripts only; ``reference/`` holds the true frame labels (what
``labels="true"`` writes as ali.txt) and phone spans; ``lexicon.txt`` the pronunciations as
spoken. The default (``labels="true"``) output is pinned byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.lexicon import read_lexicon
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.synth import PHONES, SIL, PhoneSynthConfig, synth_phones
from kdpipe.corpus.synth.espeak import RawSpeech
from kdpipe.corpus.synth.spoken import word_pronunciations
from kdpipe.corpus.synth.units import frame_units, label_frames
from kdpipe.errors import ConfigError
from kdpipe.testing.corpora import file_digests

SPLITS = ("train", "dev", "test")
KALDI_FILES = ("wav.scp", "text", "utt2spk", "spk2utt")
NUM_UTTS = 40  # enough sentences (~200 words) for the lexicon's rates; ~1 s to synthesize
# file_digests of the default output of tiny() (all but synth.json, which holds the kdpipe
# version) before --labels existed. An eSpeak NG or soxr upgrade changes it legitimately.
DEFAULT_PIN = "b4cb0f813d3370c307f5d7448d3fb923fb6c66f9735293d215ebf34411c36df4"


def tiny(seed: int = 0, **kw) -> PhoneSynthConfig:
    values = {"seed": seed, "num_utts": 12, "num_voices": 5, "max_words": 5, **kw}
    return PhoneSynthConfig.from_dict(values)


def table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def collapse(phones: list[str]) -> list[str]:
    return [p for i, p in enumerate(phones) if i == 0 or p != phones[i - 1]]


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The same corpus (seed, sentences, voices) labelled true and aligned."""
    root = tmp_path_factory.mktemp("twins")
    for labels in ("true", "aligned"):
        synth_phones(root / labels, tiny(num_utts=NUM_UTTS, labels=labels), jobs=1, progress=False)
    return root / "true", root / "aligned"


def test_split_dirs_are_transcribed_only(twins):
    _, out = twins
    assert not (out / "labels.txt").exists()
    for split in SPLITS:
        assert sorted(p.name for p in (out / split).iterdir()) == sorted(KALDI_FILES)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["labels"] == meta["config"]["labels"] == "aligned"
    assert meta["reference"]["alignments"] == {"phones": "reference/{split}/phones.txt"}
    assert (out / "reference" / "labels.txt").read_text().split() == list(PHONES)


def test_same_audio_and_transcripts_as_the_true_corpus(twins):
    true, aligned = twins
    true_files, aligned_files = file_digests(true), file_digests(aligned)
    wavs = [name for name in true_files if name.startswith("wav/")]
    assert len(wavs) == NUM_UTTS
    for name in wavs + ["lexicon.txt"] + [f"{split}/{f}" for split in SPLITS for f in KALDI_FILES]:
        assert aligned_files[name] == true_files[name], name
    for split in SPLITS:  # the true phones are today's --units phones ali.txt, byte for byte
        ref = aligned_files[f"reference/{split}/phones.txt"]
        assert ref == true_files[f"{split}/ali.txt"]
    assert aligned_files["reference/labels.txt"] == true_files["labels.txt"]


def test_reference_has_the_frame_count_prepare_computes(twins, tmp_path):
    true, aligned = twins
    # prepare reads the true twin (the same wav files, checked above): a transcribed Kaldi
    # dir needs the aligner's labels before prepare takes it
    prepare_corpus(true, tmp_path / "f.zarr", jobs=1, progress=False)
    store = FeatureStore.open(tmp_path / "f.zarr")
    frames = dict(zip(store.ids, store.num_frames.tolist(), strict=True))
    fbank = FbankConfig()
    seen = 0
    for split in SPLITS:
        wavs = table(aligned / split / "wav.scp")
        for utt, labels in table(aligned / "reference" / split / "phones.txt").items():
            count = len(labels.split())
            assert count == frames[utt] == fbank.num_frames(sf.info(aligned / wavs[utt]).frames)
            seen += 1
    assert seen == len(frames) == NUM_UTTS


def test_true_spans_give_the_true_frames(twins):
    _, out = twins
    fbank = FbankConfig()
    for split in SPLITS:
        wavs = table(out / split / "wav.scp")
        spans: dict[str, list[tuple[str, int, int]]] = {}
        for line in (out / "reference" / split / "phones.ctm").read_text().splitlines():
            utt, channel, start, duration, phone = line.split()
            lo = round(float(start) * fbank.sample_rate)
            hi = round((float(start) + float(duration)) * fbank.sample_rate)
            assert channel == "1" and phone in PHONES
            spans.setdefault(utt, []).append((phone, lo, hi))
        frames = table(out / "reference" / split / "phones.txt")
        assert set(spans) == set(frames) == set(wavs)
        for utt, utt_spans in spans.items():
            samples = sf.info(out / wavs[utt]).frames
            assert utt_spans[0][1] == 0 and utt_spans[-1][2] == samples
            assert all(a[2] == b[1] for a, b in itertools.pairwise(utt_spans))
            units = frame_units(utt_spans, fbank.num_frames(samples), fbank)
            assert label_frames(units, "phones", frozenset()) == frames[utt].split()


def test_lexicon_is_as_spoken(twins):
    _, out = twins
    lexicon = read_lexicon(out / "lexicon.txt", phones=PHONES)
    counts = json.loads((out / "synth.json").read_text())["lexicon"]
    lines = (out / "lexicon.txt").read_text().splitlines()
    assert counts["pronunciations"] == len(lines) == sum(len(p) for p in lexicon.prons.values())
    assert counts["words"] == len(lexicon.prons) and counts["utterances"] == NUM_UTTS
    assert lines == sorted(lines, key=lambda line: line.split()[0])  # words sorted
    assert counts["tokens_split"] == counts["word_tokens"]  # every word split exactly here
    spans_match = frames_match = total = 0
    for split in SPLITS:
        ctm = (out / "reference" / split / "phones.ctm").read_text().splitlines()
        said: dict[str, list[str]] = {}
        for line in ctm:
            utt, *_, phone = line.split()
            if phone != SIL:
                said.setdefault(utt, []).append(phone)
        frames = table(out / "reference" / split / "phones.txt")
        for utt, text in table(out / split / "text").items():
            words = text.split()
            assert not lexicon.missing(words)  # every word of every transcript
            joined = [sum(c, ()) for c in itertools.product(*(lexicon.prons[w] for w in words))]
            true_frames = collapse([p for p in frames[utt].split() if p != SIL])
            spans_match += any(list(c) == said[utt] for c in joined)
            frames_match += any(collapse(list(c)) == true_frames for c in joined)
            total += 1
    # the words' phones, joined, are the sentence's true phones (pauses aside) ...
    assert spans_match == total == NUM_UTTS
    # ... and so are the frame labels' phones, but where a phone is shorter than a frame
    # (a folded final l): measured 40 of 40 here, 782 of 800 in the small corpus
    assert frames_match >= 0.97 * total


def test_states_and_tied_triphones_in_the_reference(tmp_path):
    base = 3 * len(PHONES)
    for units, extra in (("states", {}), ("cd", {"num_states": base + 40, "min_state_frames": 1})):
        true, aligned = tmp_path / f"{units}-true", tmp_path / f"{units}-aligned"
        synth_phones(true, tiny(units=units, **extra), jobs=1, progress=False)
        synth_phones(aligned, tiny(units=units, labels="aligned", **extra), jobs=1, progress=False)
        assert (aligned / "reference" / "labels.txt").read_bytes() == (
            true / "labels.txt"
        ).read_bytes()
        for split in SPLITS:
            ref = aligned / "reference" / split
            assert (ref / f"{units}.txt").read_bytes() == (true / split / "ali.txt").read_bytes()
            assert (ref / "phones.txt").is_file() and not (aligned / split / "ali.txt").exists()
        meta = json.loads((aligned / "synth.json").read_text())
        assert set(meta["reference"]["alignments"]) == {"phones", units}


def test_default_output_is_unchanged(tmp_path):
    cfg = tiny()
    assert "labels" not in cfg.to_dict() and cfg.fingerprint == "a933ccb23e29fcef"
    assert tiny(labels=True) == tiny(labels="true") == cfg  # YAML's `labels: true`
    synth_phones(tmp_path / "out", cfg, jobs=1, progress=False)
    digests = file_digests(tmp_path / "out")
    meta = json.loads((tmp_path / "out" / "synth.json").read_text())
    assert not {"labels", "reference"} & set(meta)
    # every file as before; lexicon.txt is new beside them (for word graphs)
    assert meta["lexicon"]["file"] == "lexicon.txt" and "lexicon.txt" in digests
    del digests["synth.json"], digests["lexicon.txt"]
    assert hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest() == DEFAULT_PIN
    with pytest.raises(ConfigError, match="labels must be one of"):
        tiny(labels="forced")


def test_command_line(tmp_path):
    out = tmp_path / "al"
    args = ["corpus", "synth", "phones", str(out), "--num-utts", "6", "--num-voices", "3"]
    r = CliRunner().invoke(app, [*args, "--jobs", "1", "--labels", "aligned"])
    assert r.exit_code == 0, r.output
    assert (out / "lexicon.txt").is_file() and not (out / "train" / "ali.txt").exists()
    r = CliRunner().invoke(app, [*args, "--labels", "maybe"])
    assert r.exit_code == 1 and "labels must be one of" in r.output


def raw(phones: list[str], words: list[tuple[int, int]]) -> RawSpeech:
    spans = [(name, i, i + 1) for i, name in enumerate(phones)]
    return RawSpeech(np.zeros(len(phones), np.int16), spans, words=tuple(words))


def test_word_events_split_the_phones():
    # "the end": a leading pause, the glide eSpeak puts after "the" before a vowel
    speech = raw(["_", "D", "I2", ";", "'E", "n", "d", "_:"], [(1, 1), (5, 4)])
    assert word_pronunciations("the end", speech) == (("D", "I", "j"), ("E", "n", "d"))
    # "on the mat": one event for "on the" (a multi-word entry): neither word is split
    speech = raw(["0", "n", "D", "@", "m", "'a", "t"], [(1, 0), (8, 4)])
    assert word_pronunciations("on the mat", speech) == (None, None, ("m", "a", "t"))
    # "42 apples": an event per digit, inside the word, stays with it
    speech = raw(["f", "'o@", "t", "i", "t", "'u:", "'a", "p", "@L", "z"], [(1, 0), (2, 4), (4, 6)])
    assert word_pronunciations("42 apples", speech) == (
        ("f", "o@", "t", "i", "t", "u:"),
        ("a", "p", "@L", "z"),
    )
    # a word without an event has its phones in the word before it, or before the first
    # event; phones before the first word's own event might be its own: not split
    speech = raw(["h", "aI", "D", "E", "r"], [(4, 2)])
    assert word_pronunciations("hi there", speech) == (None, ("D", "E", "r"))
    speech = raw(["_", "h", "aI", "D", "E", "r"], [(1, 2), (4, 3)])
    assert word_pronunciations("hi there", speech) == (None, ("D", "E", "r"))
    speech = raw(["_", "h", "aI", "D", "E", "r"], [(1, 1), (4, 3)])
    assert word_pronunciations("hi there", speech) == (("h", "aI"), ("D", "E", "r"))
    assert word_pronunciations("hi there", raw(["h", "aI"], [])) == (None, None)
