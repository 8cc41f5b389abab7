"""The level of a label or posterior: one per frame, or one per utterance.

kdpipe's one vocabulary is ``Level``: ``"frame"`` or ``"utt"``, the words the target store
writes (``frame/``, ``utt/`` arrays). Code compares levels only as ``Level`` values.

Two artefacts spell the utterance level otherwise on disk and keep doing so, because the
word is covered by fingerprints that must stay stable (a corpus or a teacher made before
must still be recognised):

- a corpus's ``task`` (feature store attribute, ``Corpus.task``): ``"clip"`` (hashed into
  the feature store's fingerprint); a third task, ``"transcribed"`` (transcripts, no
  labels), has no level at all;
- a model card's ``level``: ``"utterance"`` (cards are recorded in target stores, whose
  fingerprint covers them).

Messages name a level with ``LEVEL_WORDS`` too ("an utterance-level model").

``parse_level`` reads a card's or a model's ``level`` (the student protocol accepts
``"utt"`` or ``"utterance"``), ``task_level`` a corpus's task; ``TASK_WORDS`` and
``LEVEL_WORDS`` give the word each artefact writes.
"""

from __future__ import annotations

from typing import Final, Literal

from kdpipe.errors import ConfigError

Level = Literal["frame", "utt"]
FRAME: Final = "frame"
UTT: Final = "utt"
LEVELS: tuple[Level, ...] = (FRAME, UTT)

TASK_WORDS: dict[Level, str] = {FRAME: "frame", UTT: "clip"}  # a corpus's ``task``
LEVEL_WORDS: dict[Level, str] = {FRAME: "frame", UTT: "utterance"}  # cards and messages
_SPELLINGS: dict[str, Level] = {"frame": FRAME, "utt": UTT, "utterance": UTT}


def parse_level(word: object, where: str = "level") -> Level:
    """The ``Level`` that ``word`` (a card's or a model's ``level``) spells: ``frame``,
    ``utt`` or ``utterance``; ``ConfigError`` naming ``where`` otherwise."""
    if isinstance(word, str) and word in _SPELLINGS:
        return _SPELLINGS[word]
    raise ConfigError(f"{where}: level must be 'frame' or 'utt' (utterance), got {word!r}")


def task_level(task: str) -> Level:
    """The level of a corpus ``task`` as recorded (``frame`` or ``clip``); ``ConfigError``
    for any other task (a ``transcribed`` corpus has no labels, hence no level: callers that
    know the corpus name it in their own message first)."""
    for level, word in TASK_WORDS.items():
        if task == word:
            return level
    raise ConfigError(f"a corpus of task {task!r} has no label level (only frame and clip do)")
