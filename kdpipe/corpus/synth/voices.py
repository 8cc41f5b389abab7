"""Synthetic speakers: an English accent crossed with an eSpeak voice variant.

A ``Voice`` (one speaker) is an accent, a variant (``None``: the accent's own voice) and its
base speaking rate, pitch and pitch range; each utterance jitters those a little. Splits are
made by *variant* (the timbre): every voice with a given variant lands in the same split, so
dev and test speakers have timbres no train speaker has.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kdpipe.corpus.synth.private import data_path
from kdpipe.errors import SynthError

# The English accents of espeak-ng-data/lang/gmw (en-Shaw is a script, not an accent).
# British English is plain "en"; espeak rejects "en-gb".
# fmt: off
ACCENTS: tuple[str, ...] = (
    "en", "en-us", "en-029", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
    "en-us-nyc",
)
# fmt: on
# Variants that sound exactly like the base voice (probed: same samples), so would be
# duplicate speakers.
DUPLICATE_VARIANTS = frozenset({"fast"})


@functools.cache
def available_accents() -> tuple[str, ...]:
    """English accents present in the installed eSpeak data (lower-case voice names)."""
    folder = data_path() / "lang" / "gmw"
    found = {p.name.lower() for p in folder.glob("en*")} if folder.is_dir() else set()
    return tuple(accent for accent in ACCENTS if accent in found)


@functools.cache
def available_variants() -> tuple[str, ...]:
    """Voice variants in ``espeak-ng-data/voices/!v`` (eSpeak accepts unknown ones silently)."""
    folder = data_path() / "voices" / "!v"
    if not folder.is_dir():
        raise SynthError(f"eSpeak NG voice variants not found: {folder}")
    return tuple(sorted(p.name for p in folder.iterdir() if p.is_file()))


def default_variants() -> tuple[str | None, ...]:
    """The base voice plus every installed variant except exact duplicates of it."""
    return (None, *(name for name in available_variants() if name not in DUPLICATE_VARIANTS))


def check_voice(accent: str, variant: str | None) -> str:
    """The eSpeak voice name for ``accent`` + ``variant``; ``SynthError`` if either is unknown."""
    if accent not in available_accents():
        raise SynthError(
            f"unknown eSpeak accent {accent!r}; known: {', '.join(available_accents())}"
        )
    if variant is not None and variant not in available_variants():
        some = ", ".join(available_variants()[:8])
        raise SynthError(
            f"unknown eSpeak voice variant {variant!r} (not in espeak-ng-data/voices/!v; "
            f"e.g. {some}, ...)"
        )
    return accent if variant is None else f"{accent}+{variant}"


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker."""

    accent: str
    variant: str | None
    wpm: int  # base speaking rate, words per minute
    pitch: int  # base pitch, 0..99 (50 = the variant's own)
    pitch_range: int  # base intonation range, 0..99 (50 = the variant's own)

    @property
    def espeak_name(self) -> str:
        return self.accent if self.variant is None else f"{self.accent}+{self.variant}"

    @property
    def speaker_id(self) -> str:
        """8 hex digits, like Speech Commands speaker ids (no ``_``, no ``-``)."""
        key = f"{self.accent}|{self.variant}|{self.wpm}|{self.pitch}|{self.pitch_range}"
        return hashlib.sha1(key.encode()).hexdigest()[:8]

    def to_dict(self) -> dict[str, object]:
        return {
            "speaker": self.speaker_id,
            "accent": self.accent,
            "variant": self.variant,
            "wpm": self.wpm,
            "pitch": self.pitch,
            "pitch_range": self.pitch_range,
        }


def sample_voices(
    rng: np.random.Generator,
    num: int,
    accents: Sequence[str],
    variants: Sequence[str | None],
    wpm: tuple[int, int],
    pitch: tuple[int, int],
    pitch_range: tuple[int, int],
) -> list[Voice]:
    """``num`` voices with distinct (accent, variant) pairs, spreading over all variants.

    Variants are dealt round-robin in a shuffled order (so 100 voices use 100 timbres when
    there are that many) and each gets an accent it does not have yet.
    """
    combos = len(accents) * len(variants)
    if num > combos:
        raise SynthError(
            f"{num} voices asked for, but only {len(accents)} accents x {len(variants)} "
            f"variants = {combos} exist"
        )
    for accent in accents:
        check_voice(accent, None)
    for variant in variants:
        if variant is not None:
            check_voice(accents[0], variant)
    order = [variants[i] for i in rng.permutation(len(variants))]
    used: dict[str | None, set[str]] = {variant: set() for variant in variants}
    voices: list[Voice] = []
    for i in range(num):
        variant = order[i % len(order)]
        free = [accent for accent in accents if accent not in used[variant]]
        accent = free[int(rng.integers(len(free)))]
        used[variant].add(accent)
        voices.append(
            Voice(
                accent,
                variant,
                int(rng.integers(wpm[0], wpm[1] + 1)),
                int(rng.integers(pitch[0], pitch[1] + 1)),
                int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
            )
        )
    return voices


def split_voices(
    voices: Sequence[Voice], dev_fraction: float, test_fraction: float, rng: np.random.Generator
) -> dict[str, str]:
    """Speaker id -> ``train``/``dev``/``test``, all voices of one variant in one split.

    Test and dev each get at least ``fraction`` of the voices (rounded up, and at least one
    when the fraction is positive and there are enough variants); train gets the rest.
    """
    groups: dict[str | None, list[Voice]] = {}
    for voice in voices:
        groups.setdefault(voice.variant, []).append(voice)
    keys = sorted(groups, key=lambda key: "" if key is None else key)
    keys = [keys[i] for i in rng.permutation(len(keys))]
    n = len(voices)
    split: dict[str, str] = {}
    for name, fraction in (("test", test_fraction), ("dev", dev_fraction)):
        want, got = math.ceil(fraction * n) if fraction > 0 else 0, 0
        while got < want and len(keys) > 1:
            for voice in groups[keys.pop(0)]:
                split[voice.speaker_id] = name
                got += 1
    for key in keys:
        for voice in groups[key]:
            split[voice.speaker_id] = "train"
    return split
