"""Reader for Kaldi data directories: frame alignments (frame task), clip labels, or
transcripts alone (task ``transcribed``); audio, or Kaldi's own features.

One data dir (``SRC/wav.scp`` or ``SRC/feats.scp``: all one split, named by ``split``) or a
folder of them (``SRC/{train,dev,test,...}/``: the split is the subdir name). Per data dir:

- ``wav.scp``: ``<rec-id> <path>``; a relative path is resolved against the data dir, then
  its parent. Piped commands (``... |``) are refused: convert the audio to files first.
- ``segments`` (optional): ``<utt-id> <rec-id> <start> <end>`` seconds (``end`` -1 = to the
  end); utterances are then segments cut from the recordings of ``wav.scp``.
- ``utt2spk`` (optional; speaker = utterance id without it), ``text`` (optional transcript).
- Frame labels, one per 10 ms frame, the first of: ``ali.txt`` (``<utt-id> <label> ...``,
  labels given as names of ``labels.txt`` or as integer indices into it: a line whose tokens
  are all label names is read as names, otherwise as indices), ``ali.scp`` / ``ali.ark``
  (Kaldi int vectors of indices, read with kaldiio). Task ``frame``.
- Or ``utt2label`` (``<utt-id> <label>``): task ``clip``.
- Or neither, and ``text``: task ``transcribed``; every utterance needs a non-empty
  transcript. (Any task keeps the transcripts of ``text``.)
- Features: from the audio of ``wav.scp`` (fbank computed by ``prepare``), or Kaldi's own
  ``feats.scp`` (with ``cmvn.scp`` applied per speaker of ``utt2spk``, see
  ``readers/kaldi_feats.py``), as ``feature_source`` says: ``audio``, ``stored``, or
  ``auto`` (the default): audio where there is a ``wav.scp``, else ``feats.scp``. From
  ``feats.scp``, the utterances are its entries (``wav.scp`` and ``segments`` unused).

Label set: ``labels.txt`` (one name per line) in the data dir or its parent (for a folder of
splits: in SRC, or identical copies in every split dir); without it, the sorted set of names
used in the alignments / ``utt2label``.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import IO

import numpy as np

from kdpipe.corpus.manifest import (
    FEATURE_SOURCES,
    SPLITS,
    TRANSCRIBED,
    Corpus,
    ExternalFeatures,
    Task,
    Utterance,
)
from kdpipe.corpus.readers.kaldi_feats import FeatsDir, kaldi_external
from kdpipe.corpus.readers.problems import Problems
from kdpipe.errors import AlignmentError, AudioError, CorpusError
from kdpipe.labels import LabelSet
from kdpipe.textfile import read_text

Table = dict[str, tuple[int, str]]  # key -> (line number, rest of line)
RawLabels = dict[str, str | list[str] | np.ndarray]  # clip label, or alignment tokens / ints
INDEX_FILES = ("wav.scp", "feats.scp")  # what makes a folder a data dir


def is_data_dir(folder: Path) -> bool:
    """A Kaldi data dir: a folder with a ``wav.scp`` or a ``feats.scp``."""
    return any((folder / name).is_file() for name in INDEX_FILES)


def read_kaldi(
    src: str | Path,
    split: str = "train",
    skip_bad: bool = False,
    *,
    feature_source: str = "auto",
    norm_vars: bool = False,
) -> Corpus:
    """Read one Kaldi data dir or a folder of split data dirs (see the module docstring).

    ``feature_source``: ``auto``, ``audio`` or ``stored`` (``feats.scp``); ``norm_vars``
    normalises variances too when a ``cmvn.scp`` is applied (Kaldi's ``--norm-vars``).
    """
    src = Path(src)
    if feature_source not in FEATURE_SOURCES:
        raise CorpusError(f"feature source must be auto, audio or stored, not {feature_source!r}")
    if is_data_dir(src):
        dirs = [(split, src)]
    else:
        subs = [d for d in sorted(src.iterdir()) if is_data_dir(d)]
        order = {s: i for i, s in enumerate(SPLITS)}
        dirs = [(d.name, d) for d in sorted(subs, key=lambda d: (order.get(d.name, 9), d.name))]
        if not dirs:
            raise CorpusError(f"{src}: no wav.scp, and no split subdirs with one")
    labels = _find_labels(src, [d for _, d in dirs])
    problems = Problems(skip_bad)
    utts: list[Utterance] = []
    raw: RawLabels = {}  # alignment tokens or clip label, per utterance
    tasks: set[Task] = set()
    feats_dirs: list[FeatsDir | None] = []
    for split_name, data_dir in dirs:
        found_utts, found_raw, found_task, found_feats = _read_dir(
            data_dir, split_name, problems, feature_source
        )
        utts += found_utts
        tasks.add(found_task)
        raw.update(found_raw)
        feats_dirs.append(found_feats)
    if len(tasks) > 1:
        if TRANSCRIBED in tasks:
            raise CorpusError(
                f"{src}: some splits have labels (alignments or utt2label) and some only "
                "transcripts (text); align them all, or none"
            )
        raise CorpusError(f"{src}: some splits have alignments and some utt2label; pick one")
    task = tasks.pop()
    external = None
    if any(found is not None for found in feats_dirs):
        if any(found is None for found in feats_dirs):
            raise CorpusError(
                f"{src}: some splits have feats.scp and some are read from audio (wav.scp); "
                "choose one for all with --feature-source"
            )
        per_speaker = all((folder / "utt2spk").is_file() for _, folder in dirs)
        external, utts = _external(feats_dirs, utts, problems, per_speaker, norm_vars)
    if task == TRANSCRIBED:
        return Corpus(
            utterances=utts,
            labels=None,
            task=task,
            source=str(src),
            format="kaldi",
            skipped=problems.skipped,
            external=external,
        )
    if labels is None:
        labels = _labels_from_use(src, raw, task)
    alignments: dict[str, np.ndarray] = {}
    kept = []
    for utt in utts:
        value = raw[utt.id]
        if task == "clip":
            assert isinstance(value, str)  # utt2label gives one label name per utterance
            if value not in labels:
                problems.add(
                    utt.id,
                    f"utterance {utt.id}: label {value!r} is not in the label set "
                    f"({len(labels)} labels)",
                    AlignmentError,
                )
                continue
            kept.append(replace(utt, label=value))
            continue
        assert not isinstance(value, str)  # alignments are token lists or int vectors
        try:
            alignments[utt.id] = _encode_alignment(value, labels, utt.id)
        except AlignmentError as error:
            problems.add(utt.id, str(error), AlignmentError)
            continue
        kept.append(utt)
    return Corpus(
        utterances=kept,
        labels=labels,
        task=task,
        source=str(src),
        format="kaldi",
        alignments={utt.id: alignments[utt.id] for utt in kept} if task == "frame" else None,
        skipped=problems.skipped,
        external=external,
    )


def _external(
    feats_dirs: list[FeatsDir | None],
    utts: list[Utterance],
    problems: Problems,
    per_speaker: bool,
    norm_vars: bool,
) -> tuple[ExternalFeatures | None, list[Utterance]]:
    """The feats.scp features of every split (``readers/kaldi_feats.py``), utterances kept."""
    dirs = [found for found in feats_dirs if found is not None]
    return kaldi_external(dirs, utts, problems, per_speaker=per_speaker, norm_vars=norm_vars)


def _read_dir(
    folder: Path, split: str, problems: Problems, feature_source: str = "auto"
) -> tuple[list[Utterance], RawLabels, Task, FeatsDir | None]:
    """Utterances of one data dir, their raw labels, the task (frame, clip or transcribed)
    and, when its features come from its feats.scp, that file's entries."""
    wav_scp = folder / "wav.scp"
    feats = _feats_dir(folder, split, feature_source)
    recs = _read_table(wav_scp) if feats is None else {}
    segments = None
    if feats is None and (folder / "segments").is_file():
        segments = _read_table(folder / "segments")
    spk = _read_table(folder / "utt2spk") if (folder / "utt2spk").is_file() else {}
    text = _read_table(folder / "text") if (folder / "text").is_file() else {}
    raw, source, task = _read_labels(folder)
    if feats is not None:
        index, index_file = _read_table(feats.feats_scp), feats.feats_scp
        feats = replace(feats, lines={utt_id: n for utt_id, (n, _) in index.items()})
    elif segments is not None:
        index, index_file = segments, folder / "segments"
    else:
        index, index_file = recs, wav_scp
    utts = []
    for utt_id, (n, rest) in index.items():
        try:
            if feats is not None:
                rec, start, end = "", 0.0, None
            elif segments is not None:
                rec, start, end = _parse_segment(folder / "segments", n, utt_id, rest)
                if rec not in recs:
                    raise CorpusError(
                        f"{folder / 'segments'}:{n}: utterance {utt_id}: recording "
                        f"{rec!r} is not in {wav_scp}"
                    )
            else:
                rec, start, end = utt_id, 0.0, None
            audio = _resolve_audio(wav_scp, *recs[rec], utt_id) if feats is None else None
            if utt_id not in raw:
                raise CorpusError(f"utterance {utt_id} (in {index_file}) has no entry in {source}")
            if task == TRANSCRIBED and not raw[utt_id]:
                raise CorpusError(
                    f"{source}:{text[utt_id][0]}: utterance {utt_id}: empty transcript"
                )
            utts.append(
                Utterance(
                    id=utt_id,
                    speaker=spk[utt_id][1].strip() if utt_id in spk else utt_id,
                    split=split,
                    audio=audio,
                    start=start,
                    end=end,
                    text=text[utt_id][1] if utt_id in text else None,
                    features=None if feats is None else _scp_entry(index_file, n, rest),
                )
            )
        except CorpusError as error:
            problems.add(utt_id, str(error), type(error))
    for utt_id in raw:
        if utt_id not in index:
            problems.add(utt_id, f"{source}: utterance {utt_id} is not in {index_file}")
    return utts, raw, task, feats


def _feats_dir(folder: Path, split: str, feature_source: str) -> FeatsDir | None:
    """The data dir's feats.scp (and cmvn.scp) when its features come from there, else None
    (audio): as ``feature_source`` says (module docstring)."""
    has_wav, has_feats = (folder / "wav.scp").is_file(), (folder / "feats.scp").is_file()
    if feature_source == "audio" and not has_wav:
        raise CorpusError(f"{folder}: no wav.scp, so no audio (its features are in feats.scp)")
    if feature_source == "stored" and not has_feats:
        raise CorpusError(f"{folder}: no feats.scp: no stored features to take")
    if feature_source == "audio" or (feature_source == "auto" and has_wav):
        return None
    cmvn_scp = folder / "cmvn.scp"
    if not cmvn_scp.is_file():
        return FeatsDir(split, folder / "feats.scp", {})
    cmvn = {
        key: (n, _scp_entry(cmvn_scp, n, rest)) for key, (n, rest) in _read_table(cmvn_scp).items()
    }
    return FeatsDir(split, folder / "feats.scp", {}, cmvn_scp, cmvn)


def _read_labels(folder: Path) -> tuple[RawLabels, Path, Task]:
    """Raw per-utterance labels: alignment tokens (frame) or a clip label, or (transcribed)
    the transcripts; the file, the task."""
    if (folder / "ali.txt").is_file():
        table = _read_table(folder / "ali.txt")
        return {k: rest.split() for k, (_, rest) in table.items()}, folder / "ali.txt", "frame"
    for name in ("ali.scp", "ali.ark"):
        path = folder / name
        if path.is_file():
            import kaldiio  # kaldiio stays out of light importers (prepare, pipeline)

            out: RawLabels = {}  # int vectors, checked below
            fds: dict[str, IO[bytes]] = {}  # ark files kaldiio opened for the scp
            try:
                if name == "ali.scp":
                    for k, (n, rest) in _read_table(path).items():
                        out[k] = kaldiio.load_mat(_scp_entry(path, n, rest), fd_dict=fds)
                else:
                    with open(path, "rb") as archive:
                        out = dict(kaldiio.load_ark(archive))
            except (OSError, ValueError, RuntimeError, EOFError, AssertionError) as error:
                raise CorpusError(f"{path}: not a readable Kaldi archive: {error}") from None
            finally:
                for ark_file in fds.values():
                    ark_file.close()
            for utt_id, value in out.items():
                if not (
                    isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu"
                ):
                    raise CorpusError(
                        f"{path}: utterance {utt_id}: expected an int vector alignment"
                    )
            return out, path, "frame"
    if (folder / "utt2label").is_file():
        table = _read_table(folder / "utt2label")
        return {k: rest.strip() for k, (_, rest) in table.items()}, folder / "utt2label", "clip"
    if (folder / "text").is_file():
        table = _read_table(folder / "text")
        return {k: rest for k, (_, rest) in table.items()}, folder / "text", TRANSCRIBED
    raise CorpusError(
        f"{folder}: no frame alignment (ali.txt, ali.scp or ali.ark) and no utt2label, "
        "and no transcripts (text); a Kaldi data dir needs one of them"
    )


SCP_OFFSET = re.compile(r"\d+(\[[\d:, ]*\])?")  # a byte offset, optionally a Kaldi row range


def _scp_entry(path: Path, n: int, rest: str) -> str:
    """``<ark file>:<offset>`` of an scp line, the file resolved (no shell pipes)."""
    where, _, offset = rest.strip().rpartition(":")
    ark = _resolve(path, where) if where else None
    if ark is None or not SCP_OFFSET.fullmatch(offset):
        raise CorpusError(
            f"{path}:{n}: expected '<utt> <ark file>:<offset>' "
            f"with an existing file, got {rest.strip()!r}"
        )
    return f"{ark}:{offset}"


def _encode_alignment(value: list[str] | np.ndarray, labels: LabelSet, utt_id: str) -> np.ndarray:
    """Label indices (T,) int32 of one alignment, checked against the label set."""
    if isinstance(value, list):
        if not value:
            raise AlignmentError(f"utterance {utt_id}: empty alignment")
        if all(t in labels for t in value):
            return np.array(labels.encode(value), dtype=np.int32)
        try:
            arr = np.array([int(t) for t in value], dtype=np.int64)
        except ValueError:
            bad = next(t for t in value if t not in labels)
            raise AlignmentError(
                f"utterance {utt_id}: label {bad!r} is not in the label set ({len(labels)} labels)"
            ) from None
    else:
        arr = value.astype(np.int64)
    out_of_range = arr[(arr < 0) | (arr >= len(labels))]
    if len(out_of_range):
        raise AlignmentError(
            f"utterance {utt_id}: label index {int(out_of_range[0])} is outside the label set "
            f"(0..{len(labels) - 1})"
        )
    return arr.astype(np.int32)


def _find_labels(src: Path, dirs: list[Path]) -> LabelSet | None:
    """labels.txt in SRC or its parent (one dir), or in SRC / every split dir (many)."""
    if len(dirs) == 1 and dirs[0] == src:
        for p in (src / "labels.txt", src.parent / "labels.txt"):
            if p.is_file():
                return LabelSet.read(p)
        return None
    if (src / "labels.txt").is_file():
        return LabelSet.read(src / "labels.txt")
    found = [
        LabelSet.read(folder / "labels.txt") for folder in dirs if (folder / "labels.txt").is_file()
    ]
    if not found:
        return None
    if len(found) != len(dirs) or any(f != found[0] for f in found):
        raise CorpusError(f"{src}: the split dirs have different labels.txt; put one in {src}")
    return found[0]


def _labels_from_use(src: Path, raw: RawLabels, task: Task) -> LabelSet:
    """Sorted set of the label names used, when there is no labels.txt."""
    names: set[str] = set()
    for value in raw.values():
        if not isinstance(value, (list, str)):
            raise CorpusError(f"{src}: integer alignments (ali.ark/ali.scp) need a labels.txt")
        names.update([value] if isinstance(value, str) else value)
    if task == "frame" and names and all(n.lstrip("-").isdigit() for n in names):
        raise CorpusError(f"{src}: alignments hold integer indices; add a labels.txt")
    if not names:
        raise CorpusError(f"{src}: no labels found and no labels.txt")
    return LabelSet(tuple(sorted(names)))


def _read_table(path: Path) -> Table:
    """``key rest`` lines; blank lines skipped; a duplicate key is an error. UTF-8 text
    (a byte-order mark is dropped); other bytes are a ``CorpusError`` naming the line."""
    out: Table = {}
    for n, line in enumerate(read_text(path, CorpusError).splitlines(), 1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            continue
        if parts[0] in out:
            raise CorpusError(f"{path}:{n}: duplicate id {parts[0]!r}")
        out[parts[0]] = (n, parts[1] if len(parts) > 1 else "")
    return out


def _parse_segment(path: Path, n: int, utt_id: str, rest: str) -> tuple[str, float, float | None]:
    parts = rest.split()
    try:
        rec, start, end = parts[0], float(parts[1]), float(parts[2])
    except (IndexError, ValueError):
        raise CorpusError(f"{path}:{n}: expected '<utt> <rec> <start> <end>'") from None
    if end >= 0 and end <= start:
        raise CorpusError(f"{path}:{n}: utterance {utt_id}: end {end} <= start {start}")
    return rec, start, None if end < 0 else end


def _resolve(index_file: Path, name: str) -> Path | None:
    """``name`` as given if absolute, else against the index file's dir, then its parent."""
    p = Path(name)
    if p.is_absolute():
        return p if p.exists() else None
    for base in (index_file.parent, index_file.parent.parent):
        if (base / p).exists():
            return base / p
    return None


def _resolve_audio(wav_scp: Path, n: int, rest: str, utt_id: str) -> str:
    rest = rest.strip()
    if rest.endswith("|"):
        raise AudioError(
            f"{wav_scp}:{n}: utterance {utt_id}: piped commands ('... |') are not supported; "
            "write the audio to files (e.g. with sox) and list their paths"
        )
    p = _resolve(wav_scp, rest)
    if p is None or not p.is_file():
        raise AudioError(f"{wav_scp}:{n}: utterance {utt_id}: audio file not found: {rest}")
    return str(p)
