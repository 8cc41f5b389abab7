"""Reader for lhotse manifests (transcribed corpora), read through lhotse itself.

lhotse is an optional extra (``pip install 'kdpipe[lhotse]'``) and a heavy import (torch,
several seconds): it is imported inside the functions that need it, never by this module.

``SRC`` is one of:

- a manifest file, a ``CutSet`` (``cuts.jsonl.gz``; ``.jsonl``, ``.json``, ``.json.gz`` too):
  all one split, named by ``split``;
- a folder of manifests named as lhotse's recipes name them, ``[<prefix>_]cuts[_<split>]``
  or a pair ``[<prefix>_]recordings[_<split>]`` + ``[<prefix>_]supervisions[_<split>]``
  with one of those suffixes (``cuts_train.jsonl.gz``, ``librispeech_cuts_dev-clean.jsonl.gz``):
  the split is the name's tail (``split`` for a name without one). A split with both a
  CutSet and a pair is read from the CutSet; two manifests of one kind for one split are
  an error.

Utterances: one per cut, its id the cut id. A recordings + supervisions pair becomes cuts as
lhotse makes them, ``CutSet.from_manifests(...).trim_to_supervisions(keep_overlapping=False)``:
one cut per supervision, its id the supervision's. An utterance's transcript is the text of
its cut's supervisions in time order, joined by a space; its speaker their speaker
("unknown" where they name none). The task is ``transcribed``.

Features, as ``feature_source`` says (``auto``: stored where every cut has features, audio
otherwise):

- ``audio``: the cut's span of its recording's file, read by kdpipe's own
  ``corpus/audio.py`` in ``prepare``'s worker processes (which never import lhotse), with
  the resampling and downmix of every kdpipe corpus. So a recording must be one local file
  (an ``AudioSource`` of type ``file``) without lhotse transforms (resampling, speed or
  volume perturbation), and its cut must take all its channels;
- ``stored``: lhotse's stored features, ``cut.load_features()`` (in ``prepare``'s process),
  recorded as external features: kind ``lhotse``, D, config ``{"type", "frame_shift",
  "sampling_rate"}`` (all that a cut manifest keeps of the extractor; every cut must agree)
  and source ``{split: {manifest file name: sha256}}``.

Relative paths in a manifest are lhotse's, relative to the working directory; where that
finds nothing, kdpipe also tries the manifest's folder.

Bad input, each a one-line ``CorpusError`` naming the cut and the manifest (or, with
``skip_bad``, left out and reported): a cut that is not a ``MonoCut``/``MultiCut``, without a
supervision, with overlapping supervisions or supervisions of several speakers, an empty
transcript, a supervision of a recording the recordings manifest lacks, a recording
without a supervision, audio or features that cannot be read as above. A manifest lhotse
itself cannot read (or one of another kind) stops the reader with lhotse's reason.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.manifest import (
    FEATURE_SOURCES,
    SPLITS,
    TRANSCRIBED,
    Corpus,
    ExternalFeatures,
    Loaded,
    Utterance,
)
from kdpipe.corpus.readers.problems import Problems
from kdpipe.errors import AudioError, CorpusError

SUFFIXES = (".jsonl.gz", ".jsonl", ".json.gz", ".json")
MANIFEST_NAME = re.compile(
    r"(?:(?P<prefix>.+?)_)?(?P<kind>cuts|recordings|supervisions)(?:_(?P<split>[^.]+))?"
    r"\.(?:jsonl|json)(?:\.gz)?"
)
_KINDS = ("cuts", "recordings", "supervisions")  # the kinds MANIFEST_NAME tells apart
OVERLAP_S = 1e-3  # supervisions may touch; overlapping by more than 1 ms is an overlap
INSTALL = "reading lhotse manifests needs lhotse: pip install 'kdpipe[lhotse]'"


@dataclass(frozen=True)
class Manifests:
    """The manifests of one split: a CutSet, or a recordings + supervisions pair."""

    split: str
    cuts: Path | None = None
    recordings: Path | None = None
    supervisions: Path | None = None

    @property
    def files(self) -> list[Path]:
        found = [self.cuts] if self.cuts else [self.recordings, self.supervisions]
        return [p for p in found if p is not None]


def is_manifest(path: Path) -> bool:
    """A file with a lhotse manifest suffix (``.jsonl.gz``, ``.jsonl``, ``.json[.gz]``)."""
    return path.name.lower().endswith(SUFFIXES)


def has_manifests(folder: Path) -> bool:
    """A folder holding manifests named as lhotse's recipes name them."""
    return any(MANIFEST_NAME.fullmatch(p.name) for p in folder.iterdir() if p.is_file())


def find_manifests(src: Path, split: str = "train") -> list[Manifests]:
    """The manifests of each split of ``src`` (a file or a folder), train, dev, test first."""
    if src.is_file():
        return [Manifests(split, cuts=src)]
    found: dict[tuple[str, str], list[Path]] = {}  # (split, kind) -> files
    for path in sorted(p for p in src.iterdir() if p.is_file()):
        if match := MANIFEST_NAME.fullmatch(path.name):
            key = (match["split"] or split, match["kind"])
            found.setdefault(key, []).append(path)
    for (name, kind), paths in found.items():
        if len(paths) > 1:
            listed = ", ".join(p.name for p in paths)
            raise CorpusError(f"{src}: several {kind} manifests for split {name!r}: {listed}")
    order = {s: i for i, s in enumerate(SPLITS)}
    out = []
    for name in sorted({n for n, _ in found}, key=lambda n: (order.get(n, len(SPLITS)), n)):
        cuts, recs, sups = (found.get((name, kind), [None])[0] for kind in _KINDS)
        if cuts is None and (recs is None or sups is None):
            have = recs or sups
            raise CorpusError(
                f"{have}: a {'recordings' if recs else 'supervisions'} manifest without its "
                f"{'supervisions' if recs else 'recordings'} (split {name!r}); give both, or cuts"
            )
        out.append(Manifests(name, cuts, None if cuts else recs, None if cuts else sups))
    if not out:
        raise CorpusError(f"{src}: no lhotse manifests (cuts, or recordings + supervisions)")
    return out


def read_lhotse(
    src: str | Path,
    split: str = "train",
    skip_bad: bool = False,
    *,
    feature_source: str = "auto",
) -> Corpus:
    """Read the lhotse manifests at ``src`` into a transcribed ``Corpus`` (module doc)."""
    if feature_source not in FEATURE_SOURCES:
        raise CorpusError(f"feature source must be auto, audio or stored, not {feature_source!r}")
    lhotse = import_lhotse()
    src = Path(src)
    problems = Problems(skip_bad)
    found = find_manifests(src, split)
    cuts: list[tuple[Any, Manifests]] = []  # every cut, with the manifests it came from
    for manifests in found:
        cuts += [(cut, manifests) for cut in _cuts(lhotse, manifests, problems)]
    stored = feature_source == "stored" or (
        feature_source == "auto" and bool(cuts) and all(cut.has_features for cut, _ in cuts)
    )
    utts: list[Utterance] = []
    kept: dict[str, tuple[Any, Path]] = {}  # utt id -> (cut, its manifest): stored features
    first: tuple[Any, str] | None = None  # the first cut's Features and where it is
    for cut, manifests in cuts:
        where = manifests.files[-1] if manifests.cuts is None else manifests.cuts
        try:
            utt = _utterance(lhotse, cut, manifests.split, where)
            if stored:
                cut = _with_features(cut, where)
                first = first or (cut.features, f"{where}: cut {cut.id}")
                _check_like(cut, first, where)
                utt = replace(utt, features=cut.id)
                kept[cut.id] = (cut, where)
            else:
                utt = replace(utt, audio=_audio_path(lhotse, cut, where))
            utts.append(utt)
        except CorpusError as error:
            problems.add(cut.id, str(error), type(error))
    external = None
    if stored and first is not None:
        external = _external(first[0], kept, found)
    return Corpus(
        utterances=utts,
        labels=None,
        task=TRANSCRIBED,
        source=str(src),
        format="lhotse",
        skipped=problems.skipped,
        external=external,
    )


def import_lhotse() -> Any:
    """The lhotse module; ``CorpusError`` telling how to install it when it is missing."""
    try:
        import lhotse  # type: ignore[import-untyped]  # optional, heavy (torch): see module doc
    except ImportError:
        raise CorpusError(INSTALL) from None
    return lhotse


def _cuts(lhotse: Any, manifests: Manifests, problems: Problems) -> list[Any]:
    """The cuts of one split's manifests, as lhotse reads (and for a pair, makes) them."""
    if manifests.cuts is not None:
        return _read(lhotse.CutSet, lhotse.cut.Cut, manifests.cuts, "cuts")
    assert manifests.recordings is not None and manifests.supervisions is not None
    recordings = _read(lhotse.RecordingSet, lhotse.Recording, manifests.recordings, "recordings")
    sups = _read(
        lhotse.SupervisionSet, lhotse.SupervisionSegment, manifests.supervisions, "supervisions"
    )
    known = {rec.id for rec in recordings}
    for sup in sups:
        if sup.recording_id not in known:
            problems.add(
                sup.id,
                f"{manifests.supervisions}: supervision {sup.id}: recording "
                f"{sup.recording_id!r} is not in {manifests.recordings}",
            )
    try:
        whole = lhotse.CutSet.from_manifests(
            recordings=lhotse.RecordingSet.from_recordings(recordings),
            supervisions=lhotse.SupervisionSet.from_segments(sups),
        )
        out = []
        for cut in whole:
            if not cut.supervisions:
                problems.add(
                    cut.recording_id,
                    f"{manifests.recordings}: recording {cut.recording_id} has no supervision "
                    f"in {manifests.supervisions}",
                )
                continue
            out += list(cut.trim_to_supervisions(keep_overlapping=False))
    except CorpusError:
        raise
    except Exception as error:  # lhotse raises anything (AssertionError, ValueError, ...)
        raise CorpusError(
            f"{manifests.supervisions}: lhotse cannot make cuts of it and "
            f"{manifests.recordings.name}: {_short(error)}"
        ) from None
    return out


def _read(manifest_class: Any, item_class: Any, path: Path, kind: str) -> list[Any]:
    """Every item of a manifest, read by lhotse; ``CorpusError`` with lhotse's reason."""
    try:
        items = list(manifest_class.from_file(path))
    except Exception as error:  # lhotse's readers raise anything, from OSError to KeyError
        raise CorpusError(f"{path}: lhotse cannot read it as {kind}: {_short(error)}") from None
    wrong = next((item for item in items if not isinstance(item, item_class)), None)
    if wrong is not None:
        raise CorpusError(
            f"{path}: not a manifest of {kind}: it holds a {type(wrong).__name__} "
            f"({getattr(wrong, 'id', '?')})"
        )
    return items


def _utterance(lhotse: Any, cut: Any, split: str, where: Path) -> Utterance:
    """The utterance of one cut (no audio or features yet); ``CorpusError`` if it is bad."""
    at = f"{where}: cut {cut.id}"
    if not isinstance(cut, (lhotse.MonoCut, lhotse.cut.MultiCut)):
        raise CorpusError(f"{at}: a {type(cut).__name__}; kdpipe reads MonoCuts and MultiCuts")
    sups = sorted(cut.supervisions, key=lambda sup: (sup.start, sup.end))
    if not sups:
        raise CorpusError(f"{at}: no supervision (no transcript)")
    for a, b in itertools.pairwise(sups):
        if b.start < a.end - OVERLAP_S:
            raise CorpusError(
                f"{at}: supervisions {a.id} and {b.id} overlap "
                f"([{a.start:.3f}, {a.end:.3f}] and [{b.start:.3f}, {b.end:.3f}] s)"
            )
    speakers = sorted({sup.speaker or "unknown" for sup in sups})
    if len(speakers) > 1:
        raise CorpusError(
            f"{at}: supervisions of several speakers ({', '.join(speakers)}); one utterance "
            "has one speaker: trim the cuts to their supervisions first"
        )
    empty = next((sup for sup in sups if not (sup.text or "").strip()), None)
    if empty is not None:
        raise CorpusError(f"{at}: supervision {empty.id} has an empty transcript")
    return Utterance(
        id=cut.id,
        speaker=speakers[0],
        split=split,
        start=float(cut.start),
        end=float(cut.end),
        text=" ".join(" ".join(str(sup.text).split()) for sup in sups),
    )


def _audio_path(lhotse: Any, cut: Any, where: Path) -> str:
    """The local file kdpipe reads the cut's audio from (module doc); else ``AudioError``."""
    at = f"{where}: cut {cut.id}"
    if not cut.has_recording:
        raise AudioError(f"{at}: no recording (and no stored features were asked for)")
    rec = cut.recording
    if len(rec.sources) != 1 or rec.sources[0].type != "file":
        kinds = ", ".join(source.type for source in rec.sources)
        raise AudioError(
            f"{at}: recording {rec.id} has audio sources of type {kinds}; kdpipe reads one "
            "local file (type 'file')"
        )
    if rec.transforms:
        raise AudioError(
            f"{at}: recording {rec.id} has lhotse transforms (resampling, perturbation); "
            "kdpipe reads the file as it is: write the transformed audio to files first"
        )
    channels = cut.channel if isinstance(cut.channel, list) else [cut.channel]
    if rec.num_channels > 1 and sorted(channels) != sorted(rec.channel_ids):
        raise AudioError(
            f"{at}: takes channel(s) {channels} of the {rec.num_channels} of recording "
            f"{rec.id}; kdpipe reads every channel of a file (downmixed)"
        )
    path = _local(rec.sources[0].source, where)
    if path is None:
        raise AudioError(f"{at}: audio file not found: {rec.sources[0].source}")
    return str(path)


def _with_features(cut: Any, where: Path) -> Any:
    """The cut with its features' storage path made absolute; ``CorpusError`` if missing."""
    at = f"{where}: cut {cut.id}"
    if not cut.has_features:
        raise CorpusError(f"{at}: no stored features (pass --feature-source audio to use audio)")
    features = cut.features
    if features.is_in_memory:
        return cut
    path = _local(features.storage_path, where)
    if path is None:
        raise CorpusError(f"{at}: features not found: {features.storage_path}")
    return replace(cut, features=replace(features, storage_path=str(path)))


def _check_like(cut: Any, first: tuple[Any, str], where: Path) -> None:
    """The cut's features are of the first cut's kind: type, D, frame shift, sample rate."""
    mine, (theirs, there) = cut.features, first
    for name in ("type", "num_features", "frame_shift", "sampling_rate"):
        if getattr(mine, name) != getattr(theirs, name):
            raise CorpusError(
                f"{where}: cut {cut.id}: features with {name} {getattr(mine, name)!r}, but "
                f"{getattr(theirs, name)!r} in {there}; a corpus holds features of one kind"
            )


def _external(
    features: Any, cuts: dict[str, tuple[Any, Path]], manifests: list[Manifests]
) -> ExternalFeatures:
    """The record of lhotse-stored features like ``features`` and their loader."""
    config = {
        "type": features.type,
        "frame_shift": features.frame_shift,
        "sampling_rate": features.sampling_rate,
    }
    source = {
        m.split: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in m.files}
        for m in manifests
    }
    dim = int(features.num_features)
    return ExternalFeatures(
        "lhotse",
        dim,
        config,
        source,
        partial(_load, cuts=cuts, dim=dim),
        frame_shift_ms=float(features.frame_shift) * 1000,
        sample_rate=int(features.sampling_rate),
    )


def _load(
    utts: list[Utterance], *, cuts: dict[str, tuple[Any, Path]], dim: int
) -> Iterator[Loaded]:
    """Each utterance's (T, D) float32 features through ``cut.load_features()``."""
    for utt in utts:
        cut, where = cuts[utt.id]
        try:
            feats = np.asarray(cut.load_features())
        except Exception as error:  # lhotse's storage backends raise anything
            message = f"{where}: cut {cut.id}: lhotse cannot load its features: {_short(error)}"
            yield None, None, ("CorpusError", message)
            continue
        if feats.ndim != 2 or feats.shape[1] != dim:
            message = f"{where}: cut {cut.id}: features of shape {feats.shape}, expected (T, {dim})"
            yield None, None, ("CorpusError", message)
            continue
        yield np.ascontiguousarray(feats, dtype=np.float32), float(cut.duration), None


def _local(name: str, manifest: Path) -> Path | None:
    """An existing local path: as given (absolute, or relative to the working directory,
    lhotse's rule), else relative to the manifest's folder; None if neither exists."""
    path = Path(name)
    for candidate in (path, manifest.parent / path):
        if candidate.exists():
            return candidate.resolve()
        if path.is_absolute():
            break
    return None


def _short(error: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(error).split()) or type(error).__name__
