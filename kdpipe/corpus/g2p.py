"""Grapheme-to-phoneme with eSpeak NG: words to phones in the synthetic corpora's phone set.

Each word is spoken alone by eSpeak NG (``synth.espeak.synthesize``, the call the synthetic
corpora make) and its phoneme events go through ``synth.phonemes.normalize_phone``, the
normalisation that gives those corpora their labels; pauses (``sil``) are dropped. The
rest of ``synth.align.clean_spans`` (folding zero-length phones, moving stop closures,
merging pauses) moves boundaries but never adds, drops or renames a non-silence phone, so
for an English voice the phones are those of ``synth.phonemes.PHONES``: a lexicon made
here matches the frame labels of ``kdpipe corpus synth phones``. Other languages give
eSpeak's own phoneme names, normalised the same way (outside ``PHONES``).

Words are given to eSpeak as written, case included: eSpeak reads ``HELLO`` as ``hello``
but spells capitalised abbreviations (``US`` is "you ess", ``us`` is "uss"), so
lower-casing would lose information. eSpeak is deterministic for phonemes (its random
state only touches the samples), so ``g2p`` is a pure function of its input.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from kdpipe.corpus.synth.espeak import synthesize
from kdpipe.corpus.synth.phonemes import SIL, normalize_phone
from kdpipe.corpus.synth.private import data_path
from kdpipe.errors import CorpusError, SynthError

SPOKEN_PUNCTUATION = "'-."  # besides letters and digits, what a word may hold ("don't", "e.g.")
PROBE = "a"  # spoken once to check the voice before any word


def g2p(words: Iterable[str], language: str) -> dict[str, tuple[str, ...] | str]:
    """Each distinct word -> its phones from eSpeak voice ``language``, or why there are none.

    ``language`` is an eSpeak voice name (``en``, ``en-us``, ``de``, ``en-us+m3``); an
    unknown one raises ``CorpusError``. A word fails (a reason string, not an exception)
    when it is not a spoken word (markup such as ``<unk>`` or ``[noise]``) or eSpeak gives
    no phones for it.
    """
    check_language(language)
    out: dict[str, tuple[str, ...] | str] = {}
    for word in words:
        if word not in out:
            out[word] = _word_phones(word, language)
    return out


def check_language(language: str) -> None:
    """Raise ``CorpusError`` unless eSpeak NG has a voice named ``language``."""
    try:
        synthesize(PROBE, language)
    except SynthError as error:
        known = sorted({p.name.lower() for p in (data_path() / "lang").rglob("*") if p.is_file()})
        wanted = language.lower()
        close = [name for name in known if name.startswith(wanted)][:4]
        close = close or difflib.get_close_matches(wanted, known, n=4, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise CorpusError(
            f"G2P: {error}; {len(known)} languages are installed (en, en-us, de, fr, ...){hint}"
        ) from None


def _word_phones(word: str, language: str) -> tuple[str, ...] | str:
    """The phones of one word, or the reason it has none."""
    if not word:
        return "empty word"
    odd = [ch for ch in word if not (ch.isalnum() or ch in SPOKEN_PUNCTUATION)]
    if odd:
        return f"not a spoken word (contains {odd[0]!r})"
    try:
        speech = synthesize(word, language)
    except SynthError as error:
        return f"eSpeak NG failed: {error}"
    phones = tuple(p for p in (normalize_phone(name) for name, _, _ in speech.phones) if p != SIL)
    return phones or "eSpeak NG gave no phones"
