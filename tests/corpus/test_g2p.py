"""eSpeak NG G2P: phones inside the synthetic corpora's phone set, agreeing with the frame
alignments of a synthesized phone corpus."""

from __future__ import annotations

import json
from itertools import groupby
from pathlib import Path

import pytest

from kdpipe.corpus.g2p import g2p
from kdpipe.corpus.synth import PHONES, SIL, PhoneSynthConfig, synth_phones
from kdpipe.corpus.synth.draws import builtin_words
from kdpipe.errors import CorpusError
from kdpipe.labels import LabelSet

SPLITS = ("train", "dev", "test")


def table(path: Path) -> dict[str, str]:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines())


def collapse(phones: list[str]) -> list[str]:
    """Phones without ``sil`` and without immediate repeats (frames -> a phone sequence)."""
    return [phone for phone, _ in groupby(p for p in phones if p != SIL)]


def test_english_words_get_phones_of_the_synthetic_set():
    words = ["hello", "world", "the", "zebra", "HELLO", "don't", "42", "little"]
    out = g2p(words, "en-us")
    assert list(out) == words
    assert out["hello"] == ("h", "@", "l", "oU") == out["HELLO"]
    assert out["zebra"] == ("z", "i:", "b", "r", "@")
    assert all(isinstance(p, tuple) and p and set(p) <= set(PHONES) - {SIL} for p in out.values())
    assert g2p(["hello"], "en-us") == {"hello": out["hello"]}  # a pure function of its input


def test_every_builtin_word_in_every_accent_stays_in_the_phone_set():
    words = builtin_words()[:80]
    for accent in ("en", "en-us", "en-gb-scotland"):
        for word, phones in g2p(words, accent).items():
            assert isinstance(phones, tuple) and set(phones) <= set(PHONES), (accent, word)


def test_failures_are_reasons_and_unknown_voices_errors():
    out = g2p(["<unk>", "[noise]", "a_b", "..."], "en")
    assert all(isinstance(reason, str) for reason in out.values())
    assert "not a spoken word" in str(out["<unk>"])
    assert out["..."] == "eSpeak NG gave no phones"
    with pytest.raises(CorpusError) as excinfo:
        g2p(["hello"], "en-gb")
    message = str(excinfo.value)
    assert "\n" not in message and "'en-gb'" in message and "did you mean" in message


def test_other_languages_give_normalised_espeak_phones():
    out = g2p(["haus"], "de")
    assert out["haus"] == ("h", "aU", "s")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A tiny synthesized phone corpus: 40 sentences, one accent (``en-us``)."""
    out = tmp_path_factory.mktemp("g2p") / "phones"
    config = {"seed": 0, "num_utts": 40, "num_voices": 8, "max_words": 6, "accents": ["en-us"]}
    synth_phones(out, PhoneSynthConfig.from_dict(config), jobs=1, progress=False)
    return out


def test_g2p_reproduces_the_synthetic_alignments(corpus):
    """Measured: 37 of 40 utterances (92.5 %); the rest are connected speech (a linking
    ``r``) and a folded ``l`` that got no frame of its own."""
    assert LabelSet.read(corpus / "labels.txt").names == PHONES
    texts, alis = {}, {}
    for split in SPLITS:
        texts |= table(corpus / split / "text")
        alis |= table(corpus / split / "ali.txt")
    accents = {v["accent"] for v in json.loads((corpus / "synth.json").read_text())["voices"]}
    assert accents == {"en-us"}
    lexicon = g2p(sorted({w for text in texts.values() for w in text.split()}), "en-us")
    same = 0
    for utt, text in texts.items():
        pron = [p for w in text.split() for p in lexicon[w]]  # type: ignore[union-attr]
        same += collapse(pron) == collapse(alis[utt].split())
    assert len(texts) == 40 and same / len(texts) >= 0.85, same
