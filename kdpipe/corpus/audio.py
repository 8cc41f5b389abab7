"""Load one utterance's audio as a mono float32 waveform at the target sample rate.

Shapes: a file holds (S_file, C) samples at its own rate; ``load_audio`` returns (S,) float32
in [-1, 1] at ``sample_rate``: channels averaged (downmix to mono), the ``[start, end)``
segment cut out (Kaldi ``segments``), then resampled with soxr (``HQ``, deterministic).

Every failure a user can cause (missing file, unreadable or corrupt file, empty audio,
NaN/inf samples, a segment outside the file, a WAV file shorter than its header says) is an
``AudioError`` naming the utterance and the file. libsndfile reads a truncated WAV file as
the samples that are there, so ``wav_claimed_frames`` reads what its header promises.

A float WAV (or other float-coded file) whose samples reach far outside [-1, 1] (peak
above ``FLOAT_PEAK_WARN``) is almost surely integer samples stored as float: it is read as
it is (features of a scaled waveform; CMVN removes most of a constant gain), with one
warning per file and process on stderr naming the file and its peak.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from kdpipe.console import err_console
from kdpipe.errors import AudioError

# Kaldi's extract-segments truncates segments that run past the end of the recording by
# up to --max-overshoot=0.5 s and refuses longer overshoots; we do the same.
MAX_OVERSHOOT_S = 0.5
# float samples are meant to lie in [-1, 1]; a little overshoot (mastering, resampling) is
# common and harmless, a peak of 2 or more is integer samples stored as float
FLOAT_PEAK_WARN = 2.0
_FLOAT_SUBTYPES = frozenset({"FLOAT", "DOUBLE"})
_warned: set[str] = set()  # files already warned about in this process


def load_audio(
    path: str | Path,
    sample_rate: int,
    start: float = 0.0,
    end: float | None = None,
    utt_id: str = "",
) -> np.ndarray:
    """Read ``path[start:end]`` (seconds) as (S,) float32 mono at ``sample_rate``.

    ``end=None`` reads to the end of the file. The segment may overshoot the end of the file
    by up to ``MAX_OVERSHOOT_S`` (it is truncated there), like Kaldi's extract-segments.
    """
    import soundfile as sf  # soundfile and soxr stay out of light importers (prepare, pipeline)
    import soxr

    p = Path(path)
    who = f"utterance {utt_id}: " if utt_id else ""
    if not p.is_file():
        raise AudioError(f"{who}audio file not found: {p}")
    try:
        with sf.SoundFile(str(p)) as f:  # one open: header, seek, read
            file_rate, file_len = int(f.samplerate), int(f.frames)
            if file_len == 0:
                raise AudioError(f"{who}audio file {p} is empty (no samples)")
            claimed = wav_claimed_frames(p) if f.format in ("WAV", "WAVEX") else None
            if claimed is not None and claimed > file_len:
                raise AudioError(
                    f"{who}audio file {p} is truncated: its header says {claimed} samples, "
                    f"it holds {file_len}"
                )
            first = round(start * file_rate)
            last = file_len if end is None else round(end * file_rate)
            if first >= file_len or last - file_len > MAX_OVERSHOOT_S * file_rate:
                span = f"[{start:.3f}, {'end' if end is None else f'{end:.3f}'}]"
                raise AudioError(
                    f"{who}segment {span} s lies outside {p} ({file_len / file_rate:.3f} s long)"
                )
            f.seek(first)
            data = f.read(min(last, file_len) - first, dtype="float32", always_2d=True)
            is_float = f.subtype in _FLOAT_SUBTYPES
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as error:
        raise AudioError(f"{who}cannot read audio file {p}: {_short(error)}") from None
    if data.shape[0] == 0:  # data: (S_file, C)
        raise AudioError(f"{who}audio file {p} is empty (no samples)")
    if not np.isfinite(data).all():
        raise AudioError(f"{who}audio file {p} holds NaN or infinite samples")
    if is_float:
        _check_float_peak(p, data)
    wave = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]  # (S_file,)
    if file_rate != sample_rate:
        wave = soxr.resample(wave, file_rate, sample_rate, quality="HQ")  # (S,)
    return np.ascontiguousarray(wave, dtype=np.float32)


def _check_float_peak(p: Path, data: np.ndarray) -> None:
    """Warn once per file (and process) when float samples peak far outside [-1, 1]."""
    peak = float(np.abs(data).max())
    key = str(p.resolve())
    if peak < FLOAT_PEAK_WARN or key in _warned:
        return
    _warned.add(key)
    err_console.print(
        f"[yellow]warning:[/] audio file {p} holds float samples with peak {peak:g}, far "
        "outside [-1, 1] (integer samples stored as float?): features are computed from "
        "the samples as they are",
        highlight=False,
        soft_wrap=True,
    )


def wav_claimed_frames(path: Path) -> int | None:
    """The samples per channel a RIFF WAV file's header promises (its ``data`` chunk size
    over the frame size in ``fmt``), or None where it cannot say: not RIFF, or a size of 0
    or 0xFFFFFFFF (streaming writers leave the length open)."""
    with path.open("rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        block = 0
        for _ in range(64):  # chunks before "data": fmt, LIST, fact, ... (a bounded walk)
            top = f.read(8)
            if len(top) < 8:
                return None
            name, size = top[:4], struct.unpack("<I", top[4:])[0]
            if name == b"data":
                if block <= 0 or size in (0, 0xFFFFFFFF):
                    return None
                return size // block
            body = f.read(size + (size & 1))  # chunks are padded to even sizes
            if name == b"fmt " and len(body) >= 14:
                block = struct.unpack_from("<H", body, 12)[0]  # nBlockAlign: bytes per frame
    return None


def _short(e: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(e).split()) or type(e).__name__
