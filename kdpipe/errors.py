"""The kdpipe error hierarchy.

Every error a user can cause (bad input, a mismatch between stages, a corrupt file) is a
``KdpipeError``. The CLI prints it as one line and exits 1; anything else reaching the user
is a bug.
"""

from __future__ import annotations


class KdpipeError(Exception):
    """Base class of every error kdpipe raises on purpose."""

    exit_code: int = 1


class ConfigError(KdpipeError, ValueError):
    """A config file or option is malformed: unknown key, wrong type, value out of range."""


class CorpusError(KdpipeError):
    """A corpus cannot be read: missing or corrupt audio, bad index files, bad labels."""


class AudioError(CorpusError):
    """An audio file is missing, unreadable, empty or not audio."""


class AlignmentError(CorpusError):
    """A frame alignment disagrees with its features, or holds labels outside the label set."""


class LabelSetError(KdpipeError):
    """Two stages disagree on the label set, or a label is not in it."""


class FingerprintMismatch(KdpipeError):
    """An artefact was made from different inputs or settings than the consumer expects."""


class StoreError(KdpipeError):
    """A store cannot be opened, read or written as its format says."""


class StoreFormatError(StoreError):
    """A store is of an unknown or newer format version, or its layout breaks the spec."""


class StoreIntegrityError(StoreError):
    """A store's content fails verification: checksum, range, finiteness, duplicates."""


class ModelError(KdpipeError):
    """A model or checkpoint is unknown, malformed, or breaks the student protocol."""


class TrainingError(KdpipeError):
    """Training cannot go on: NaN loss, empty split, diverged run."""


class SynthError(CorpusError):
    """Speech synthesis failed: eSpeak NG missing, unknown voice, synthesis error."""
