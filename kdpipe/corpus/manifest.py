"""The utterance manifest: what a corpus holds, independent of its on-disk format.

A ``Corpus`` is what every reader returns and what ``prepare`` consumes:

- ``task == "clip"``: one label per utterance (keyword spotting); ``Utterance.label`` set.
- ``task == "frame"``: one label per 10 ms frame; ``Corpus.alignments[utt_id]`` is an int
  array of label indices, shape (T,).
- ``task == "transcribed"``: no labels (``Corpus.labels`` is None), a transcript per
  utterance (``Utterance.text``, non-empty): what ``kdpipe corpus align`` takes in.

Any task may keep transcripts (``Utterance.text``). A corpus whose features come with it
instead of from audio (Kaldi ``feats.scp``, lhotse-stored features) says so in
``Corpus.external`` (``ExternalFeatures``), which also knows how to load them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from kdpipe.errors import CorpusError
from kdpipe.labels import LabelSet
from kdpipe.levels import Level, task_level
from kdpipe.schema import check_keys
from kdpipe.textfile import read_text

if TYPE_CHECKING:
    import numpy as np

Task = Literal["clip", "frame", "transcribed"]
TRANSCRIBED: Final = "transcribed"
TASKS: tuple[Task, ...] = ("clip", "frame", TRANSCRIBED)
SPLITS = ("train", "dev", "test")
# Where a reader takes the features from: "audio" (fbank computed by prepare), "stored"
# (the features the corpus brings: Kaldi feats.scp, lhotse's), "auto" (each reader's rule)
FEATURE_SOURCES = ("auto", "audio", "stored")
# One utterance's features as a loader yields them: (T, F) float32 (None on error), its
# duration in seconds (None: frames x the frame shift), and an error as (``kdpipe.errors``
# class name, message) or None.
Loaded = tuple["np.ndarray | None", "float | None", "tuple[str, str] | None"]


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
    features: str | None = None  # key of precomputed features (HDF5 key, Kaldi rxspecifier,
    # lhotse cut id): what ``Corpus.external.load`` (or the HDF5 reader) reads

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


@dataclass(frozen=True)
class ExternalFeatures:
    """Features a corpus brings with it (Kaldi ``feats.scp``, lhotse-stored), taken as they
    are instead of computed from audio.

    ``config`` says what the features are (two corpora with equal ``kind``, ``dim`` and
    ``config`` hold features a model may take alike: a card compares it); ``source`` says
    where these came from (files and their sha256: provenance, hashed into the store's
    fingerprint). ``frame_shift_ms`` and ``sample_rate`` are None where the source does not
    say (Kaldi's matrices): ``prepare``'s feature config gives them then. ``load`` yields
    one ``Loaded`` per utterance, in the order given, from the utterances'
    ``Utterance.features`` keys (in the calling process: no workers).
    """

    kind: str  # "kaldi" (feats.scp) or "lhotse" (a cut's stored features)
    dim: int  # D, the columns of every matrix
    config: dict[str, Any]
    source: dict[str, Any]
    load: Callable[[list[Utterance]], Iterator[Loaded]] = field(compare=False, repr=False)
    frame_shift_ms: float | None = None
    sample_rate: int | None = None

    def record(self) -> dict[str, Any]:
        """What a feature store records of these features (JSON-able, no loader)."""
        return {"kind": self.kind, "dim": self.dim, "config": self.config, "source": self.source}


def transcripts_only(where: str) -> CorpusError:
    """The one error for asking a transcribed corpus (or its store) for labels."""
    return CorpusError(
        f"corpus {where} has transcripts only (no frame or clip labels): "
        "align it first with `kdpipe corpus align`"
    )


@dataclass
class Corpus:
    """Utterances plus the label set and, for frame tasks, the per-frame alignments.

    ``alignments`` maps utterance id to an int array of label indices, shape (T,), one per
    10 ms frame (before any subsampling). ``sample_rate`` is the rate ``prepare`` resamples
    audio to. ``labels`` is None exactly for a transcribed corpus, whose every utterance has
    a non-empty ``text``. ``external`` is set when the features come with the corpus.
    """

    utterances: list[Utterance]
    labels: LabelSet | None
    task: Task
    source: str  # where it was read from (path), for messages and fingerprints
    format: str  # reader name: speech_commands, kaldi, hdf5, lhotse
    alignments: dict[str, np.ndarray] | None = None
    sample_rate: int = 16000
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (utt id, reason)
    external: ExternalFeatures | None = None

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise CorpusError(
                f"unknown task {self.task!r}; expected 'clip', 'frame' or 'transcribed'"
            )
        if (self.labels is None) != (self.task == TRANSCRIBED):
            raise CorpusError(
                f"{self.source}: a {self.task} corpus "
                + ("needs a label set" if self.labels is None else "takes no label set")
            )
        if self.task == TRANSCRIBED and (bad := [u.id for u in self.utterances if not u.text]):
            raise CorpusError(f"{self.source}: utterance {bad[0]} has no transcript")
        ids = [utt.id for utt in self.utterances]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = next(i for i in ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise CorpusError(f"{self.source}: duplicate utterance id {dup!r}")

    @property
    def level(self) -> Level:
        """The level of the labels: ``frame`` (alignments) or ``utt`` (a clip label);
        ``CorpusError`` for a transcribed corpus (no labels)."""
        if self.task == TRANSCRIBED:
            raise transcripts_only(self.source)
        return task_level(self.task)

    @property
    def label_set(self) -> LabelSet:
        """``labels`` of a labelled corpus; ``CorpusError`` for a transcribed one."""
        if self.labels is None:
            raise transcripts_only(self.source)
        return self.labels

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
    for n, line in enumerate(read_text(p, CorpusError, "manifest").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(Utterance.from_dict(json.loads(line)))
        except (json.JSONDecodeError, TypeError) as error:
            raise CorpusError(f"{p}:{n}: bad manifest line: {error}") from None
    return out
