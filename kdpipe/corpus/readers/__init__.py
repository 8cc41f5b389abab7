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
``CorpusError`` naming the utterance and the file.
"""

from __future__ import annotations

from pathlib import Path

from kdpipe.corpus.manifest import SPLITS, Corpus
from kdpipe.errors import CorpusError, KdpipeError

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
            from kdpipe.corpus.readers.speech_commands import read_speech_commands

            corpus = read_speech_commands(src, skip_bad=skip_bad)
        elif fmt == "kaldi":
            from kdpipe.corpus.readers.kaldi import read_kaldi

            corpus = read_kaldi(src, split=split, skip_bad=skip_bad)
        else:
            from kdpipe.corpus.readers.hdf5 import read_hdf5

            corpus = read_hdf5(src, skip_bad=skip_bad)
    except KdpipeError:
        raise
    except (OSError, UnicodeDecodeError) as e:  # unreadable index files and the like
        raise CorpusError(f"{src}: cannot read as {fmt}: {e}") from None
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


class Problems:
    """Collects per-utterance problems: raise the first, or record all with ``skip_bad``."""

    def __init__(self, skip_bad: bool, error: type[CorpusError] = CorpusError) -> None:
        self.skip_bad = skip_bad
        self.error = error
        self.skipped: list[tuple[str, str]] = []
        self.bad: set[str] = set()

    def add(self, utt_id: str, reason: str, error: type[CorpusError] | None = None) -> None:
        """One problem with ``utt_id``; ``reason`` is a one-line message that names it."""
        if not self.skip_bad:
            raise (error or self.error)(reason)
        if utt_id not in self.bad:
            self.bad.add(utt_id)
            self.skipped.append((utt_id, reason))
