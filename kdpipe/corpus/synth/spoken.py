"""Words as eSpeak spoke them: a sentence's phones split at its word events, and the
lexicon of a corpus made from those splits (``lexicon.txt`` of ``--labels aligned``).

eSpeak NG sends a word event (``espeakEVENT_WORD``, with the word's character position in
the text) before the phone events of each word it speaks, so the phones between one word's
event and the next word's are that word's pronunciation *in this sentence*: its accent and
its neighbours included (a linking ``r``, the glide ``j`` that ``the`` gets before a vowel).
A word is split exactly when a word event starts at it and at the word after it (word
events inside a word, as eSpeak sends for the digits of a number, stay with it). Where
eSpeak reads two words as one (multi-word dictionary entries: "on the", "of the", "there
are" send one event for both) or skips a word's event, those words get no pronunciation
from that sentence.

Pronunciations are in ``PHONES`` (``normalize_phone``) with pauses dropped: in order, the
non-silence phones of the sentence's true spans (``align.clean_spans`` moves boundaries but
never adds, drops or renames a non-silence phone; ``audio.synthesize_words`` checks it).

The lexicon holds, for every word, each distinct pronunciation the corpus spoke (over its
accents and contexts), most frequent first. A (word, accent) pair the corpus never split
exactly gets the word spoken alone in that accent instead (the way ``kdpipe.corpus.g2p``
pronounces words); ``LexiconCounts`` says how many, and which.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe.corpus.synth.espeak import RawSpeech, synthesize
from kdpipe.corpus.synth.phonemes import SIL, normalize_phone
from kdpipe.errors import SynthError

Pronunciation = tuple[str, ...]  # phones of PHONES, no silence
_WORD = re.compile(r"\S+")


def word_pronunciations(text: str, raw: RawSpeech) -> tuple[Pronunciation | None, ...]:
    """Each word of ``text`` (``text.split()``) -> its phones in ``raw``, None where the
    word events do not delimit it exactly (see the module docstring)."""
    spans = [(m.start() + 1, m.end()) for m in _WORD.finditer(text)]  # 1-based, inclusive
    found: list[Pronunciation | None] = [None] * len(spans)
    starts: dict[int, tuple[int, bool]] = {}  # word -> (its first phone, event at its start)
    last = -1
    for position, first_phone in raw.words:
        word = next((k for k, (lo, hi) in enumerate(spans) if lo <= position <= hi), None)
        if word is None or word < last:  # an event between words or going back: no split
            return tuple(found)
        if word != last:
            starts[word] = (first_phone, position == spans[word][0])
        last = word
    names = [normalize_phone(name) for name, _, _ in raw.phones]
    said = sorted(starts)
    for i, word in enumerate(said):
        begin, at_start = starts[word]
        if not at_start:
            continue
        if i + 1 < len(said):
            following = said[i + 1]
            end, next_at_start = starts[following]
            if following != word + 1 or not next_at_start:
                continue  # the next word has no event of its own: merged into this one
        elif word == len(spans) - 1:
            end = len(names)
        else:
            continue  # later words have no event: merged into this one
        if word == 0 and any(name != SIL for name in names[:begin]):
            continue  # phones before the first word's event: its own, or no word's?
        pron = tuple(name for name in names[begin:end] if name != SIL)
        found[word] = pron or None
    return tuple(found)


def isolated_pronunciation(word: str, accent: str) -> Pronunciation | None:
    """``word`` spoken alone in eSpeak voice ``accent``: its phones, None if it has none."""
    try:
        speech = synthesize(word, accent)
    except SynthError:
        return None
    pron = tuple(p for p in (normalize_phone(name) for name, _, _ in speech.phones) if p != SIL)
    return pron or None


@dataclass(frozen=True)
class SpokenSentence:
    """One kept utterance's words, accent, and pronunciations (None: not split exactly)."""

    text: str
    accent: str
    pronunciations: tuple[Pronunciation | None, ...]


@dataclass(frozen=True)
class LexiconCounts:
    """What went into a spoken lexicon (recorded in ``synth.json``)."""

    words: int  # distinct words of the transcripts
    pronunciations: int  # lines of lexicon.txt
    word_tokens: int  # words of the transcripts
    tokens_split: int  # ... whose pronunciation came from their own sentence
    utterances: int
    utterances_split: int  # ... every word of which was split exactly
    isolated: tuple[tuple[str, str], ...] = ()  # (word, accent) pairs spoken alone instead
    without_pronunciation: tuple[str, ...] = ()  # words with no pronunciation at all

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": self.words,
            "pronunciations": self.pronunciations,
            "word_tokens": self.word_tokens,
            "tokens_split": self.tokens_split,
            "utterances": self.utterances,
            "utterances_split": self.utterances_split,
            "isolated": [f"{word} {accent}" for word, accent in self.isolated],
            "without_pronunciation": list(self.without_pronunciation),
        }


@dataclass(frozen=True)
class SpokenLexicon:
    """Word -> its pronunciations as spoken, most frequent first (ties: by phones)."""

    prons: dict[str, tuple[Pronunciation, ...]]
    counts: LexiconCounts

    def write(self, path: str | Path) -> Path:
        """Kaldi ``lexicon.txt``: ``word phone phone ...``, one line per pronunciation,
        words sorted."""
        p = Path(path)
        lines = [f"{w} {' '.join(pron)}\n" for w in sorted(self.prons) for pron in self.prons[w]]
        p.write_text("".join(lines), encoding="utf-8")
        return p


def spoken_lexicon(sentences: Iterable[SpokenSentence]) -> SpokenLexicon:
    """The lexicon of ``sentences``: every pronunciation split from them, plus words spoken
    alone for the (word, accent) pairs that had none."""
    seen: dict[str, Counter[Pronunciation]] = {}
    accents_split: set[tuple[str, str]] = set()
    accents_said: set[tuple[str, str]] = set()
    tokens = split = utterances = whole = 0
    for sentence in sentences:
        words = sentence.text.split()
        utterances += 1
        whole += all(p is not None for p in sentence.pronunciations)
        for word, pron in zip(words, sentence.pronunciations, strict=True):
            tokens += 1
            accents_said.add((word, sentence.accent))
            seen.setdefault(word, Counter())
            if pron is not None:
                split += 1
                seen[word][pron] += 1
                accents_split.add((word, sentence.accent))
    isolated = sorted(accents_said - accents_split)
    for word, accent in isolated:
        pron = isolated_pronunciation(word, accent)
        if pron is not None:
            seen[word][pron] += 1
    prons = {word: _by_frequency(times.items()) for word, times in sorted(seen.items()) if times}
    counts = LexiconCounts(
        words=len(seen),
        pronunciations=sum(len(p) for p in prons.values()),
        word_tokens=tokens,
        tokens_split=split,
        utterances=utterances,
        utterances_split=whole,
        isolated=tuple(isolated),
        without_pronunciation=tuple(sorted(set(seen) - set(prons))),
    )
    return SpokenLexicon(prons, counts)


def _by_frequency(items: Iterable[tuple[Pronunciation, int]]) -> tuple[Pronunciation, ...]:
    return tuple(pron for pron, _ in sorted(items, key=lambda item: (-item[1], item[0])))
