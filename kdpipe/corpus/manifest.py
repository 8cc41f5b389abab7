"""The utterance manifest: what a corpus holds, independent of its on-disk format.

A ``Corpus`` is what every reader returns and what ``prepare`` consumes:

- ``task == "clip"``: one label per utterance (keyword spotting); ``Utterance.label`` set.
- ``task == "frame"``: one label per 10 ms frame; ``Corpus.alignments[utt_id]`` is an int
  array of label indices, shape (T,).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kdpipe.errors import CorpusError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level, task_level
from kdpipe.schema import check_keys

if TYPE_CHECKING:
    import numpy as np

Task = Literal["clip", "frame"]
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Utterance:
    """One utterance: where its audio (or features) is, who spoke it, its split and label."""

    id: str
    speaker: str = "unknown"
    split: str = "train"
    audio: str | None = None  # path to a wav/flac; None when features come precomputed
    start: float = 0.0  # seconds into ``audio`` (Kaldi ``segments``)
    end: float | None = None  # seconds; None = to the end of the file
    label: str | None = None  # clip label (task "clip")
    text: str | None = None  # transcript, where known
    features: str | None = None  # key of precomputed features (HDF5 archive)

    def __post_init__(self) -> None:
        if not self.id or any(c.isspace() for c in self.id):
            raise CorpusError(f"utterance id {self.id!r} is empty or contains whitespace")
        if self.end is not None and self.end <= self.start:
            raise CorpusError(f"utterance {self.id}: segment end {self.end} <= start {self.start}")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Utterance:
        check_keys(d, cls, "manifest line")
        return cls(**d)


@dataclass
class Corpus:
    """Utterances plus the label set and, for frame tasks, the per-frame alignments.

    ``alignments`` maps utterance id to an int array of label indices, shape (T,), one per
    10 ms frame (before any subsampling). ``sample_rate`` is the rate ``prepare`` resamples
    audio to.
    """

    utterances: list[Utterance]
    labels: LabelSet
    task: Task
    source: str  # where it was read from (path), for messages and fingerprints
    format: str  # reader name: speech_commands, kaldi, hdf5
    alignments: dict[str, np.ndarray] | None = None
    sample_rate: int = 16000
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (utt id, reason)

    def __post_init__(self) -> None:
        if self.task not in ("clip", "frame"):
            raise CorpusError(f"unknown task {self.task!r}; expected 'clip' or 'frame'")
        ids = [utt.id for utt in self.utterances]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise CorpusError(f"{self.source}: duplicate utterance id {dup!r}")

    @property
    def level(self) -> Level:
        """The level of the labels: ``frame`` (alignments) or ``utt`` (a clip label)."""
        return task_level(self.task)

    def __len__(self) -> int:
        return len(self.utterances)

    def __iter__(self) -> Iterator[Utterance]:
        return iter(self.utterances)

    def split(self, name: str) -> list[Utterance]:
        return [utt for utt in self.utterances if utt.split == name]

    def splits(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for utt in self.utterances:
            out[utt.split] = out.get(utt.split, 0) + 1
        return out


def write_manifest(path: str | Path, utterances: Iterable[Utterance]) -> None:
    """Write utterances as JSON lines."""
    with open(path, "w") as f:
        for utt in utterances:
            f.write(json.dumps(utt.to_dict(), sort_keys=True) + "\n")


def read_manifest(path: str | Path) -> list[Utterance]:
    """Read a JSON-lines manifest written by ``write_manifest``."""
    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"manifest not found: {p}")
    out = []
    for n, line in enumerate(p.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Utterance.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise CorpusError(f"{p}:{n}: bad manifest line: {error}") from None
    return out
