"""eSpeak phoneme names to a fixed English phone set.

eSpeak's phoneme events carry stress marks (``'`` primary, ``,`` secondary) and allophone
suffixes (``I2``, ``aI3``, ``i@3``, ``t#`` flap, ``t[`` dental, ``r-``, ``@-``, ``w#``) that
differ between accents. Probing every word of the built-in list and the keyword list in all
eight English accents (``kdpipe/corpus/synth/words.txt``) gave 109 raw names (stress marks
included); these rules leave 55 phones plus ``sil``, the 56 labels of ``PHONES``, all used:

- drop stress marks; every pause (``_``, ``_:``, ``_!``, ...) is ``sil``;
- strip allophone suffixes: trailing digits, ``#``, ``[``, ``-`` (``O2`` -> ``O``, the
  American "lot/cloth" vowel, the only one that becomes a name of its own);
- ``a#`` -> ``@``: eSpeak's reduced "a" (about, again) is a schwa (IPA ``ə`` in 119 of
  179 uses; the accents that use it put it where the others have ``@``);
- ``;`` -> ``j``: the palatal glide eSpeak inserts between ``i:`` and ``@`` (real, behind);
- ``0`` -> ``Q`` (the "lot" vowel, X-SAMPA's name) and ``3`` -> ``@r`` (the American
  r-coloured schwa): a label that reads as an integer would be mistaken for an index.
"""

from __future__ import annotations

import string

SIL = "sil"

# The phone inventory (eSpeak ASCII mnemonics): sil, then sorted; the ``--units phones`` order.
# fmt: off
PHONES: tuple[str, ...] = (
    SIL,
    "3:", "@", "@L", "@r", "A:", "A@", "D", "E", "I", "IR", "N", "O", "O:", "O@", "OI", "Q",
    "S", "T", "U", "U@", "V", "VR", "Z", "a", "aI", "aI@", "aU", "aa", "b", "d", "dZ", "e@",
    "eI", "f", "g", "h", "i", "i:", "i@", "j", "k", "l", "m", "n", "o@", "oU", "p", "r", "s",
    "t", "tS", "u:", "v", "w", "z",
)
# fmt: on
STOPS = frozenset({"p", "t", "k", "b", "d", "g", "tS", "dZ"})  # closure + release

_STRESS = "',=%"  # stress and syllable marks eSpeak may put in front of a phoneme
_SUFFIXES = string.digits + "#[-"
_SPECIAL = {"a#": "@", ";": "j"}  # before suffix stripping
_RENAME = {"0": "Q", "3": "@r"}  # after it


def normalize_phone(raw: str) -> str:
    """The phone of ``PHONES`` that eSpeak phoneme name ``raw`` stands for.

    Names outside the inventory come back normalised but unknown; callers check membership.
    """
    name = raw.strip().lstrip(_STRESS)
    if not name or name.startswith("_"):
        return SIL
    if name in _SPECIAL:
        return _SPECIAL[name]
    while True:
        base = name.rstrip(_SUFFIXES)
        if not base or base == name:  # "0" and "3" are phones, not suffixes
            return _RENAME.get(name, name)
        name = base
