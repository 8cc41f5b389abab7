"""Corpus readers: turn a folder or archive into a ``Corpus``; detect which format it is.

Formats (``FORMATS``):

- ``speech_commands``: ``<label>/<speaker>_nohash_<n>.wav`` with ``validation_list.txt`` and
  ``testing_list.txt`` (clip task). See ``readers/speech_commands.py``.
- ``kaldi``: a Kaldi data dir (``wav.scp``, ``text``, ``utt2spk``, optional ``segments``)
  with frame alignments (``ali.txt`` / ``ali.ark`` / ``ali.scp``) or ``utt2label``, or
  transcripts (``text``) alone; audio, or Kaldi's ``feats.scp`` (+ ``cmvn.scp``); or a
  folder of ``train/``, ``dev/``, ``test/`` data dirs. See ``readers/kaldi.py`` and
  ``readers/kaldi_feats.py``.
- ``hdf5``: an HDF5 archive of precomputed features. See ``readers/hdf5.py``.
- ``lhotse``: a lhotse ``CutSet`` manifest, or a folder of cuts (or recordings +
  supervisions) manifests per split, with audio or lhotse-stored features (transcribed).
  Needs the optional extra ``kdpipe[lhotse]``. See ``readers/lhotse.py``.

Readers check what they can without decoding audio (files exist, ids agree, labels are in
the label set). With ``skip_bad=True`` a bad utterance is left out and recorded in
``Corpus.skipped`` as ``(utt id, reason)``; otherwise the first one raises a one-line
``CorpusError`` naming the utterance and the file (``readers/problems.py``).
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.corpus.manifest import FEATURE_SOURCES, SPLITS, Corpus
from kdpipe.corpus.readers.hdf5 import read_hdf5
from kdpipe.corpus.readers.kaldi import is_data_dir, read_kaldi
from kdpipe.corpus.readers.lhotse import has_manifests, is_manifest, read_lhotse
from kdpipe.corpus.readers.problems import Problems
from kdpipe.corpus.readers.speech_commands import read_speech_commands
from kdpipe.errors import CorpusError, KdpipeError

__all__ = ["FEATURE_SOURCES", "FORMATS", "Problems", "detect_format", "read_corpus"]

FORMATS = ("speech_commands", "kaldi", "hdf5", "lhotse")
HDF5_SUFFIXES = (".h5", ".hdf5")


def detect_format(src: str | Path) -> str:
    """The format of ``src``: ``kaldi``, ``hdf5``, ``lhotse`` or ``speech_commands`` (see
    the module doc)."""
    p = Path(src)
    if not p.exists():
        raise CorpusError(f"corpus not found: {p}")
    if p.is_file():
        if p.suffix.lower() in HDF5_SUFFIXES:
            return "hdf5"
        if is_manifest(p):
            return "lhotse"
        raise CorpusError(f"{p}: a file that is not .h5/.hdf5 or a lhotse manifest; {_known()}")
    if is_data_dir(p) or any(is_data_dir(p / s) for s in SPLITS):
        return "kaldi"
    if has_manifests(p):
        return "lhotse"
    if any(
        d.is_dir() and not d.name.startswith((".", "_")) and any(d.glob("*.wav"))
        for d in p.iterdir()
    ):
        return "speech_commands"
    raise CorpusError(f"{p}: cannot tell the corpus format; {_known()}")


def read_corpus(
    src: str | Path,
    format: str | None = None,
    *,
    split: str = "train",
    skip_bad: bool = False,
    sample_rate: int = 16000,
    feature_source: str = "auto",
    norm_vars: bool = False,
) -> Corpus:
    """Read ``src`` (format detected unless given) into a ``Corpus``.

    ``split`` names the split of a single Kaldi data dir or lhotse manifest;
    ``sample_rate`` is the rate ``prepare`` will resample audio to (recorded on the
    corpus). ``feature_source`` (Kaldi and lhotse): ``audio``, ``stored`` (Kaldi's
    feats.scp, lhotse's stored features) or ``auto`` (see each reader); ``norm_vars``:
    Kaldi's cmvn.scp normalises variances too.
    """
    fmt = format or detect_format(src)
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; {_known()}")
    if feature_source not in FEATURE_SOURCES:
        raise CorpusError(f"feature source must be auto, audio or stored, not {feature_source!r}")
    if not Path(src).exists():
        raise CorpusError(f"corpus not found: {src}")
    fixed = {"speech_commands": "audio", "hdf5": "stored"}.get(fmt)
    if fixed is not None and feature_source not in ("auto", fixed):
        has = "audio only" if fixed == "audio" else "stored features only"
        raise CorpusError(f"{src}: a {fmt} corpus has {has}; feature source {feature_source!r}")
    try:
        if fmt == "speech_commands":
            corpus = read_speech_commands(src, skip_bad=skip_bad)
        elif fmt == "kaldi":
            corpus = read_kaldi(
                src,
                split=split,
                skip_bad=skip_bad,
                feature_source=feature_source,
                norm_vars=norm_vars,
            )
        elif fmt == "lhotse":
            corpus = read_lhotse(src, split=split, skip_bad=skip_bad, feature_source=feature_source)
        else:
            corpus = read_hdf5(src, skip_bad=skip_bad)
    except KdpipeError:
        raise
    except (OSError, UnicodeDecodeError) as error:  # unreadable index files and the like
        raise CorpusError(f"{src}: cannot read as {fmt}: {error}") from None
    if fmt != "hdf5":
        corpus.sample_rate = sample_rate
    if corpus.external is not None and corpus.external.sample_rate is not None:
        corpus.sample_rate = corpus.external.sample_rate
    if not corpus.utterances:
        why = f" (all {len(corpus.skipped)} skipped)" if corpus.skipped else ""
        raise CorpusError(f"{src}: no utterances found{why}")
    return corpus


def _known() -> str:
    return (
        "known formats: speech_commands (<label>/<spk>_nohash_<n>.wav folders), "
        "kaldi (a data dir with wav.scp or feats.scp, or train/dev/test data dirs), "
        "hdf5 (a .h5/.hdf5 feature archive), "
        "lhotse (a cuts.jsonl.gz, or a folder of cuts_<split> or recordings_<split> + "
        "supervisions_<split> manifests); pass --format to choose"
    )
