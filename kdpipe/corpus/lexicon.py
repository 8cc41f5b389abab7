"""Pronunciation lexicons: words to phone sequences (Kaldi ``lexicon.txt`` / CMUdict style).

A ``Lexicon`` maps each word to one or more pronunciations (tuples of phone names) over a
phone set that includes the silence phone. It is what alignment compiles into its lexicon
FST (``kdpipe.hmm.lang``); ``fingerprint`` identifies it, so an alignment records which
lexicon made it.

- ``read_lexicon`` / ``write_lexicon``: Kaldi ``lexicon.txt`` and ``lexiconp.txt``, CMUdict;
- ``read_phones``: a phone set from a ``phones.txt`` (Kaldi's, or one name per line);
- ``lexicon_for``: exactly the lexicon a set of transcripts needs, words the lexicon lacks
  from eSpeak NG's G2P (``kdpipe.corpus.g2p``), with a ``LexiconReport`` of what came from
  where. See ``docs/lexicon.md``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from kdpipe.corpus.g2p import g2p as espeak_g2p
from kdpipe.errors import CorpusError
from kdpipe.labels import LabelSet
from kdpipe.schema import fingerprint
from kdpipe.textfile import read_text

SILENCE = "sil"  # the silence phone of kdpipe's corpora (the synthetic ones use it)
FORMATS = ("auto", "lexicon", "lexiconp", "cmudict")
LexiconFormat = Literal["auto", "lexicon", "lexiconp", "cmudict"]
NO_G2P = "not in the lexicon and G2P is off"

_ALTERNATE = re.compile(r"^(.+)\(\d+\)$")  # CMUdict's WORD(2)
_DISAMBIG = re.compile(r"^#\d+$")  # Kaldi phones.txt disambiguation symbols


@dataclass(frozen=True)
class Lexicon:
    """Words -> pronunciations, over ``phones`` (``silence`` among them)."""

    prons: Mapping[str, tuple[tuple[str, ...], ...]]  # word -> its pronunciations, in order
    phones: tuple[str, ...]  # every phone, silence included, in a stable order
    silence: str = SILENCE  # the optional silence between words (and at the edges)
    g2p_words: tuple[str, ...] = field(default=())  # words whose prons came from G2P

    def __post_init__(self) -> None:
        object.__setattr__(self, "prons", dict(self.prons))
        object.__setattr__(self, "phones", tuple(self.phones))
        if self.silence not in self.phones:
            raise CorpusError(f"lexicon: the silence phone {self.silence!r} is not a phone")
        known = set(self.phones)
        for word, prons in self.prons.items():
            if not prons or any(not p for p in prons):
                raise CorpusError(f"lexicon: word {word!r} has an empty pronunciation")
            for pron in prons:
                if isinstance(pron, str):  # ("a", "b") given for (("a", "b"),)
                    raise CorpusError(f"lexicon: word {word!r}: a pronunciation is a tuple "
                                      f"of phones, got the string {pron!r}")  # fmt: skip
                unknown = [p for p in pron if p not in known]
                if unknown:
                    raise CorpusError(f"lexicon: word {word!r}: unknown phone {unknown[0]!r}")

    @property
    def words(self) -> list[str]:
        return sorted(self.prons)

    @property
    def nonsilence_phones(self) -> tuple[str, ...]:
        return tuple(p for p in self.phones if p != self.silence)

    @property
    def phone_labels(self) -> LabelSet:
        """The phone set as a ``LabelSet``: phone -> index, written and fingerprinted alike."""
        return LabelSet(self.phones)

    @functools.cached_property
    def fingerprint(self) -> str:
        """Identity of the words, pronunciations, phone set and silence phone."""
        entries = sorted((w, [list(p) for p in ps]) for w, ps in self.prons.items())
        return fingerprint([entries, list(self.phones), self.silence])

    def missing(self, words: list[str]) -> list[str]:
        """The words of ``words`` that have no pronunciation, in first-seen order."""
        return list(dict.fromkeys(w for w in words if w not in self.prons))


@dataclass(frozen=True)
class LexiconReport:
    """Where the pronunciations of a set of transcripts came from."""

    words: tuple[str, ...]  # distinct transcript words, first-seen order
    found: tuple[str, ...]  # ... that the lexicon had
    g2p: tuple[str, ...]  # ... that G2P gave phones
    failed: Mapping[str, str]  # word -> why it has no pronunciation (G2P off or failed)
    language: str | None = None  # the G2P voice, None when G2P was off

    def __post_init__(self) -> None:
        object.__setattr__(self, "failed", dict(self.failed))

    def to_dict(self) -> dict[str, Any]:
        return {
            "words": len(self.words),
            "found": len(self.found),
            "g2p_language": self.language,
            "g2p": list(self.g2p),
            "failed": dict(self.failed),
        }

    def summary(self) -> str:
        """One line: how many words, from the lexicon, from G2P, without pronunciation."""
        via = f" (G2P {self.language})" if self.language else ""
        return (
            f"{len(self.words)} words: {len(self.found)} in the lexicon, "
            f"{len(self.g2p)} from G2P{via}, {len(self.failed)} without a pronunciation"
        )


def read_lexicon(
    path: str | Path,
    *,
    phones: str | Path | Sequence[str] | None = None,
    silence: str = SILENCE,
    file_format: LexiconFormat = "auto",
) -> Lexicon:
    """Read a Kaldi ``lexicon.txt`` / ``lexiconp.txt`` or a CMUdict file into a ``Lexicon``.

    ``phones`` is the phone set (a file for ``read_phones``, or names in order); a phone
    outside it is an error naming file:line. Without it the phone set is every phone used
    plus ``silence``, sorted, silence first. ``file_format="auto"`` detects the format
    (``detect_format``). Several pronunciations per word keep file order; duplicates drop.
    """
    p = Path(path)
    lines = _read_lines(p, "lexicon")
    kind = detect_format(p, lines) if file_format == "auto" else file_format
    if kind not in FORMATS[1:]:
        raise CorpusError(f"unknown lexicon format {kind!r}; known: {', '.join(FORMATS)}")
    phone_set = _phone_set(phones)
    known = set(phone_set) if phone_set is not None else None
    source = str(phones) if isinstance(phones, str | Path) else "the phone set"
    if phone_set is not None and silence not in phone_set:
        raise CorpusError(f"{source}: the silence phone {silence!r} is not in it")
    prons: dict[str, list[tuple[str, ...]]] = {}
    for number, line in lines:
        where = f"{p}:{number}"
        word, pron = _entry(line, kind, where)
        if word is None:
            continue
        if known is not None:
            unknown = [ph for ph in pron if ph not in known]
            if unknown:
                raise CorpusError(f"{where}: unknown phone {unknown[0]!r} (not in {source})")
        entries = prons.setdefault(word, [])
        if pron not in entries:
            entries.append(pron)
    if not prons:
        raise CorpusError(f"{p}: no pronunciations in it")
    if phone_set is None:
        used = {ph for entries in prons.values() for pron in entries for ph in pron}
        phone_set = (silence, *sorted(used - {silence}))
    return Lexicon({w: tuple(e) for w, e in prons.items()}, phone_set, silence)


BESIDE = ("lexicon.txt", "align/lexicon.txt", "../lexicon.txt")  # synth, align, a split dir


def lexicon_beside(source: str | Path) -> Path | None:
    """The lexicon that came with a corpus folder: ``lexicon.txt`` of a synthesized
    corpus, ``align/lexicon.txt`` of ``kdpipe corpus align``'s output (or of the folder
    above a split folder); None when there is none."""
    if not str(source) or "://" in str(source):
        return None
    folder = Path(source)
    for name in BESIDE:
        if (folder / name).is_file():
            return (folder / name).resolve()
    return None


def detect_format(path: Path, lines: list[tuple[int, str]]) -> str:
    """``cmudict``, ``lexiconp`` or ``lexicon``: from the file's name, then its lines.

    CMUdict: the name holds ``cmudict``, a line starts with ``;;;``, or a word ``W(2)`` has
    ``W`` too. lexiconp: the name holds ``lexiconp``, or every line has a second field that
    is a number in (0, 1] and a third field. Anything else is a plain ``lexicon.txt``.
    Kaldi's ``lexiconp_silprob.txt`` (three more numbers per line) is refused, not misread.
    """
    name = path.name.lower()
    if "silprob" in name:
        raise CorpusError(f"{path}: lexiconp_silprob.txt is not read; give lexiconp.txt")
    if "cmudict" in name or any(line.startswith(";;;") for _, line in lines):
        return "cmudict"
    words = {line.split(maxsplit=1)[0] for _, line in lines}
    if any((m := _ALTERNATE.match(w)) and m.group(1) in words for w in words):
        return "cmudict"
    if "lexiconp" in name:
        return "lexiconp"
    fields = [line.split() for _, line in lines]
    if fields and all(len(f) >= 3 and _probability(f[1]) is not None for f in fields):
        return "lexiconp"
    return "lexicon"


def write_lexicon(lexicon: Lexicon, path: str | Path) -> Path:
    """Write ``lexicon`` as a Kaldi ``lexicon.txt``, one line per pronunciation; the path.

    ``read_lexicon(write_lexicon(x, p), phones=x.phones, silence=x.silence)`` equals ``x``
    for a lexicon without G2P words (the file keeps no phone set and no provenance).
    """
    p = Path(path)
    lines = []
    for word, prons in lexicon.prons.items():
        if not word or len(word.split()) != 1 or word != word.strip():
            raise CorpusError(f"lexicon: cannot write word {word!r} (it holds white space)")
        alternate = _ALTERNATE.match(word)
        if word.startswith(";;;") or (alternate and alternate.group(1) in lexicon.prons):
            raise CorpusError(f"lexicon: cannot write word {word!r} (it reads back as CMUdict)")
        lines += [f"{word} {' '.join(pron)}\n" for pron in prons]
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text("".join(lines), encoding="utf-8")
    return p


def read_phones(path: str | Path) -> tuple[str, ...]:
    """A phone set from a file: Kaldi ``phones.txt`` (``phone id``) or one name per line.

    ``<eps>`` and disambiguation symbols (``#0``, ``#1``, ...) are not phones and are left
    out; order is the file's (by id for ``phones.txt``).
    """
    p = Path(path)
    found: list[tuple[int, str]] = []
    for number, line in _read_lines(p, "phone set"):
        fields = line.split()
        if len(fields) > 2 or (len(fields) == 2 and not fields[1].isdigit()):
            raise CorpusError(f"{p}:{number}: expected 'phone' or 'phone id', got {line!r}")
        name = fields[0]
        if name == "<eps>" or _DISAMBIG.match(name):
            continue
        if any(name == seen for _, seen in found):
            raise CorpusError(f"{p}:{number}: phone {name!r} listed twice")
        found.append((int(fields[1]) if len(fields) == 2 else len(found), name))
    if not found:
        raise CorpusError(f"{p}: no phones in it")
    return tuple(name for _, name in sorted(found))


def lexicon_for(
    transcripts: Mapping[str, str],
    lexicon: Lexicon | None,
    g2p: str | None,
    *,
    skip_bad: bool = False,
) -> tuple[Lexicon, LexiconReport, list[tuple[str, str]]]:
    """The lexicon of exactly the words of ``transcripts`` (utterance id -> text).

    Words come from ``lexicon`` first, then from eSpeak NG voice ``g2p`` (None: G2P off);
    a G2P phone outside the lexicon's phone set fails that word. A word with no
    pronunciation, or an empty transcript, raises ``CorpusError`` naming the word and the
    first utterance with it; with ``skip_bad`` those utterances are left out instead and
    returned as (utterance id, reason). The phone set is the lexicon's, or without one
    the phones G2P used plus ``sil`` (pass ``Lexicon({}, PHONES)`` to fix it).
    """
    if lexicon is None and g2p is None:
        raise CorpusError("no lexicon and no G2P: nothing can give the transcripts' words phones")
    texts = {utt: text.split() for utt, text in transcripts.items()}
    words = tuple(dict.fromkeys(w for ws in texts.values() for w in ws))
    prons = dict(lexicon.prons) if lexicon is not None else {}
    found = tuple(w for w in words if w in prons)
    failed = {w: NO_G2P for w in words if w not in prons}
    guessed: dict[str, tuple[str, ...]] = {}
    if g2p is not None and failed:
        allowed = set(lexicon.phones) if lexicon is not None else None
        for word, result in espeak_g2p(list(failed), g2p).items():
            if isinstance(result, str):
                failed[word] = f"G2P failed: {result}"
                continue
            outside = [p for p in result if allowed is not None and p not in allowed]
            if outside:
                failed[word] = f"G2P gave phone {outside[0]!r}, not in the lexicon's phone set"
                continue
            guessed[word] = result
            del failed[word]
    left_out: list[tuple[str, str]] = []
    needed: set[str] = set()
    for utt, ws in texts.items():
        problem = _unspeakable(ws, failed)
        if problem is None:
            needed.update(ws)
            continue
        if not skip_bad:
            raise CorpusError(f"utterance {utt}: {problem}")
        left_out.append((utt, f"utterance {utt}: {problem}"))
    kept = {w: prons[w] if w in prons else (guessed[w],) for w in sorted(needed)}
    if lexicon is not None:
        phones, silence = lexicon.phones, lexicon.silence
    else:
        used = {p for prons_of in kept.values() for pron in prons_of for p in pron}
        phones, silence = (SILENCE, *sorted(used - {SILENCE})), SILENCE
    g2p_words = tuple(w for w in kept if w in guessed)
    report = LexiconReport(words, found, tuple(guessed), failed, g2p)
    return Lexicon(kept, phones, silence, g2p_words), report, left_out


def _unspeakable(words: list[str], failed: Mapping[str, str]) -> str | None:
    """Why a transcript cannot be aligned (empty, or a word without phones), or None."""
    if not words:
        return "empty transcript"
    bad = next((w for w in words if w in failed), None)
    return None if bad is None else f"word {bad!r} has no pronunciation ({failed[bad]})"


def _read_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """The non-empty lines of a UTF-8 file with their 1-based numbers, stripped."""
    text = read_text(path, CorpusError, f"{what} file")
    numbered = enumerate(text.splitlines(), start=1)
    return [(number, line.strip()) for number, line in numbered if line.strip()]


def _entry(line: str, kind: str, where: str) -> tuple[str | None, tuple[str, ...]]:
    """(word, phones) of one lexicon line, or (None, ()) for a comment."""
    if kind == "cmudict":
        if line.startswith(";;;"):
            return None, ()
        line = line.split(" #", 1)[0]  # cmudict.dict's trailing comments
    fields = line.split()
    word, rest = fields[0], fields[1:]
    if kind == "cmudict":
        alternate = _ALTERNATE.match(word)
        word = alternate.group(1) if alternate else word
    elif kind == "lexiconp":
        if not rest or _probability(rest[0]) is None:
            raise CorpusError(f"{where}: word {word!r}: expected a probability in (0, 1]")
        rest = rest[1:]
    if not rest:
        raise CorpusError(f"{where}: word {word!r} has no phones")
    return word, tuple(rest)


def _probability(text: str) -> float | None:
    """``text`` as a number in (0, 1], or None."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0.0 < value <= 1.0 else None


def _phone_set(phones: str | Path | Sequence[str] | None) -> tuple[str, ...] | None:
    """The phone set ``read_lexicon`` was given: from a file, or the names as they are."""
    if phones is None:
        return None
    if isinstance(phones, str | Path):
        return read_phones(phones)
    names = tuple(phones)
    if len(set(names)) != len(names):
        raise CorpusError("the phone set lists a phone twice")
    return names
