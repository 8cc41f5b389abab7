"""eSpeak NG binding, phone normalisation, alignment repair and frame units (no corpora)."""

from __future__ import annotations

from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.synth import PHONES, SIL, espeak, normalize_phone, speak
from kdpipe.corpus.synth.align import FOLD_SHARE, AlignmentIssue, clean_spans
from kdpipe.corpus.synth.units import (
    STATES,
    frame_units,
    label_frames,
    monophone_labels,
    tie_triphones,
)
from kdpipe.corpus.synth.voices import available_variants, split_voices
from kdpipe.errors import SynthError


def test_speak_gives_audio_and_phones_covering_it():
    audio, phones = speak("seven", "en-us", "m3")
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert 0.3 < len(audio) / 16000 < 1.5
    assert float(np.sqrt(np.mean(audio**2))) > 0.01  # not silent
    assert float(np.max(np.abs(audio))) <= 1.0
    assert phones[0][1] == 0.0 and phones[-1][2] == pytest.approx(len(audio) / 16000)
    for (_, _, end), (_, start, _) in pairwise(phones):
        assert start == end  # contiguous
    assert all(e > s for _, s, e in phones)
    assert all(p in PHONES for p, _, _ in phones)
    assert [p for p, _, _ in phones if p != SIL] == ["s", "E", "v", "@", "n"]
    # the phones carry the energy: the loudest 10 ms falls inside the vowel
    loud = int(np.argmax(np.convolve(audio**2, np.ones(160), "same"))) / 16000
    vowel = next((s, e) for p, s, e in phones if p == "E")
    assert vowel[0] <= loud < vowel[1]


@pytest.mark.parametrize("variant", ["m3", "whisper", "Reed"])  # plain, breathy, Klatt
def test_same_arguments_same_samples_whatever_ran_before(variant):
    a1, p1 = speak("go left", "en", variant, seed=7)
    speak("something else entirely", "en-gb-x-rp", "klatt", rate=300, pitch=90, seed=3)
    a2, p2 = speak("go left", "en", variant, seed=7)
    assert a1.tobytes() == a2.tobytes() and p1 == p2
    if variant != "m3":  # these draw noise from the seeded generators
        a3, _ = speak("go left", "en", variant, seed=8)
        assert a3.tobytes() != a1.tobytes()


def test_unknown_accent_or_variant_is_a_synth_error():
    with pytest.raises(SynthError, match=r"unknown eSpeak accent 'en-gb'.*en-us"):
        speak("yes", "en-gb")
    with pytest.raises(SynthError, match=r"unknown eSpeak voice variant 'nobody'.*voices/!v"):
        speak("yes", "en-us", "nobody")
    with pytest.raises(SynthError, match="does not know voice 'xx'"):
        espeak.synthesize("yes", "xx")
    with pytest.raises(SynthError, match="empty"):
        espeak.synthesize("  ", "en")
    assert {"m3", "f2", "whisper", "klatt"} <= set(available_variants())


@pytest.mark.parametrize(
    ("raw", "phone"),
    [
        ("'E", "E"),
        (",aU", "aU"),
        ("_:", SIL),
        ("_", SIL),
        ("I2", "I"),
        ("aI3", "aI"),
        ("i@3", "i@"),
        ("t#", "t"),
        ("t[", "t"),
        ("r-", "r"),
        ("@-", "@"),
        ("a#", "@"),
        (";", "j"),
        ("'0", "Q"),
        ("3", "@r"),
        ("3:", "3:"),
        ("O2", "O"),
        ("@L", "@L"),
    ],
)
def test_normalize_phone(raw, phone):
    assert normalize_phone(raw) == phone
    assert phone in PHONES


def test_clean_spans_folds_zero_length_phones_and_moves_closures():
    x = np.zeros(3000, dtype=np.int16)
    x[100:1500] = (8000 * np.sin(np.arange(1400) / 3)).astype(np.int16)  # vowel, then quiet
    x[2000:2300] = 6000  # the burst
    raw = [
        ("_", 0, 100),
        ("'O:", 100, 1000),
        ("l", 1000, 1000),
        ("I", 1000, 2000),
        ("t", 2000, 2900),
        ("_:", 2900, 3000),
        ("_", 3000, 3000),
    ]
    spans = clean_spans(raw, x, 22050)
    assert [p for p, _, _ in spans] == [SIL, "O:", "l", "I", "t", SIL]
    assert spans[2][1] == 1000 - round(FOLD_SHARE * 900)  # l takes the vowel's tail
    i_end = spans[3][2]
    assert i_end < 2000 and i_end >= 1500  # the silent closure went to the stop
    assert spans[4][1] == i_end and spans[-1][2] == 3000
    with pytest.raises(AlignmentIssue, match="runs past"):
        clean_spans(raw, x, 22050, end_sample=2500)  # "t" would be after the END event
    with pytest.raises(AlignmentIssue, match="end event"):
        clean_spans(raw, x, 22050, end_sample=3001)
    assert clean_spans(raw, x, 22050, end_sample=2900) == spans
    with pytest.raises(AlignmentIssue, match="inventory"):
        clean_spans([("_", 0, 10), ("X9", 10, 3000)], x, 22050)
    with pytest.raises(AlignmentIssue, match="contiguous"):
        clean_spans([("_", 0, 10), ("a", 20, 3000)], x, 22050)
    with pytest.raises(AlignmentIssue, match="no duration"):
        clean_spans([("_", 0, 10), ("l", 10, 10), ("a", 10, 3000)], x, 22050)


def test_frame_units_follow_frame_centres_and_states_split_thirds():
    fb = FbankConfig()
    spans = [(SIL, 0, 1000), ("a", 1000, 5800), ("t", 5800, 8000)]
    n = fb.num_frames(8000)
    units = frame_units(spans, n, fb)
    assert len(units) == n == 48
    for i, (left, phone, right, state) in enumerate(units):
        centre = fb.frame_center(i) * 16000
        s, e = next((s, e) for p, s, e in spans if s <= centre < e and p == phone)
        assert state == min(STATES, 1 + int(3 * (centre - s) / (e - s)))
        if phone == "a":
            assert (left, right) == (SIL, "t")
    names = label_frames(units, "states", frozenset())
    assert Counter(n for n in names if n.startswith("a_")).keys() == {"a_1", "a_2", "a_3"}


def test_tie_triphones_keeps_most_frequent_up_to_target():
    base = monophone_labels("states")
    assert len(base) == STATES * len(PHONES) and len(monophone_labels("phones")) == len(PHONES)
    counts = Counter(
        {
            ("s", "a", "t", 1): 50,
            ("s", "a", "t", 2): 40,
            ("k", "a", "t", 1): 3,
            (SIL, SIL, "a", 1): 99,
        }
    )
    tied = tie_triphones(counts, len(base) + 1, min_frames=1)
    assert tied == [*base, "s-a+t_1"]
    tied = tie_triphones(counts, len(base) + 10, min_frames=5)  # too few reach 5 frames
    assert tied == [*base, "s-a+t_1", "s-a+t_2"]
    units = [("s", "a", "t", 2), ("k", "a", "t", 1), (SIL, SIL, "a", 1)]
    assert label_frames(units, "cd", frozenset(tied)) == ["s-a+t_2", "a_1", "sil_1"]


def test_split_voices_by_variant():
    from kdpipe.corpus.synth.voices import Voice

    voices = [
        Voice(a, v, 170, 50, 50) for v in ("m1", "m2", "f1", "f2", None) for a in ("en", "en-us")
    ]
    split = split_voices(voices, 0.2, 0.2, np.random.default_rng(0))
    by_variant: dict[object, set[str]] = {}
    for v in voices:
        by_variant.setdefault(v.variant, set()).add(split[v.speaker_id])
    assert all(len(s) == 1 for s in by_variant.values())  # one split per timbre
    assert Counter(split.values()) == {"train": 6, "dev": 2, "test": 2}
