"""Corpus readers: turn a folder or archive into a ``Corpus``; detect which format it is.

Formats (``FORMATS``):

- ``speech_commands``: ``<label>/<speaker>_nohash_<n>.wav`` with ``validation_list.txt`` and
  ``testing_list.txt`` (clip task). See ``readers/speech_commands.py``.
- ``kaldi``: a Kaldi data dir (``wav.scp``, ``text``, ``utt2spk``, optional ``segments``)
  with frame alignments (``ali.txt`` / ``ali.ark`` / ``ali.scp``) or ``utt2label``; or a
  folder of ``train/``, ``dev/``, ``test/`` data dirs. See ``readers/kaldi.py``.
- ``hdf5``: an HDF5 archive of precomputed features. See ``readers/hdf5.py``.

Readers check what they can without decoding audio (files exist, ids agree, labels are in
the label set). With ``skip_bad=True`` a bad utterance is left out and recorded in
``Corpus.skipped`` as ``(utt id, reason)``; otherwise the first one raises a one-line
``CorpusError`` naming the utterance and the file (``readers/problems.py``).
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.corpus.manifest import SPLITS, Corpus
from kdpipe.corpus.readers.hdf5 import read_hdf5
from kdpipe.corpus.readers.kaldi import read_kaldi
from kdpipe.corpus.readers.problems import Problems
from kdpipe.corpus.readers.speech_commands import read_speech_commands
from kdpipe.errors import CorpusError, KdpipeError

__all__ = ["FORMATS", "Problems", "detect_format", "read_corpus"]

FORMATS = ("speech_commands", "kaldi", "hdf5")
HDF5_SUFFIXES = (".h5", ".hdf5")


def detect_format(src: str | Path) -> str:
    """The format of ``src``: ``kaldi``, ``hdf5`` or ``speech_commands`` (see the module doc)."""
    p = Path(src)
    if not p.exists():
        raise CorpusError(f"corpus not found: {p}")
    if p.is_file():
        if p.suffix.lower() in HDF5_SUFFIXES:
            return "hdf5"
        raise CorpusError(f"{p}: a file that is not .h5/.hdf5; {_known()}")
    if (p / "wav.scp").is_file() or any((p / s / "wav.scp").is_file() for s in SPLITS):
        return "kaldi"
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
) -> Corpus:
    """Read ``src`` (format detected unless given) into a ``Corpus``.

    ``split`` names the split of a single Kaldi data dir; ``sample_rate`` is the rate
    ``prepare`` will resample audio to (recorded on the corpus).
    """
    fmt = format or detect_format(src)
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; {_known()}")
    if not Path(src).exists():
        raise CorpusError(f"corpus not found: {src}")
    try:
        if fmt == "speech_commands":
            corpus = read_speech_commands(src, skip_bad=skip_bad)
        elif fmt == "kaldi":
            corpus = read_kaldi(src, split=split, skip_bad=skip_bad)
        else:
            corpus = read_hdf5(src, skip_bad=skip_bad)
    except KdpipeError:
        raise
    except (OSError, UnicodeDecodeError) as error:  # unreadable index files and the like
        raise CorpusError(f"{src}: cannot read as {fmt}: {error}") from None
    if fmt != "hdf5":
        corpus.sample_rate = sample_rate
    if not corpus.utterances:
        why = f" (all {len(corpus.skipped)} skipped)" if corpus.skipped else ""
        raise CorpusError(f"{src}: no utterances found{why}")
    return corpus


def _known() -> str:
    return (
        "known formats: speech_commands (<label>/<spk>_nohash_<n>.wav folders), "
        "kaldi (a data dir with wav.scp, or train/dev/test data dirs), "
        "hdf5 (a .h5/.hdf5 feature archive); pass --format to choose"
    )
