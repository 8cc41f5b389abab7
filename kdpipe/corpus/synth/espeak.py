"""A ctypes binding to eSpeak NG, as shipped (library and data) by ``espeakng-loader``.

eSpeak keeps synthesis state in static variables (the pitch-flutter phase, the automatic
gain control, the cycle counter, its random generator seeded from the clock), so the same
text spoken twice in one process gives different samples. To make every utterance depend
only on its own settings, ``synthesize`` loads a private copy of the library afresh for each
call (``dlopen`` + ``espeak_Initialize``, about 1 ms; see ``private``), seeds eSpeak's
random generator and the C library's ``rand`` (the Klatt voices use it; this reseeds it for
the whole process), and unloads the copy afterwards. Work can then be split across
processes in any way and the output stays byte-identical.

Shapes: ``RawSpeech.samples`` is (S,) int16 at ``NATIVE_RATE`` (22050 Hz); phone events are
``(name, start, end)`` in samples of that signal, contiguous, ending at S. Each word event
is kept as where a word starts, in the text (its character position) and among the phone
events (the index of its first phone): ``spoken`` splits a sentence's phones into words.
"""

from __future__ import annotations

import _ctypes
import ctypes
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.synth.private import private_data, private_library
from kdpipe.errors import SynthError

NATIVE_RATE = 22050  # eSpeak NG's fixed output rate

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE, _PARAM_PITCH, _PARAM_RANGE = 1, 3, 4
_EV_LIST_TERMINATED, _EV_WORD, _EV_END, _EV_MSG_TERMINATED, _EV_PHONEME = 0, 1, 5, 6, 7

RATE_RANGE = (80, 450)  # words per minute eSpeak accepts
PITCH_RANGE = (0, 99)  # espeakPITCH and espeakRANGE are 0..99 (50 = the voice's own)


class _EventId(ctypes.Union):
    _fields_ = (("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8))


class _Event(ctypes.Structure):
    """``espeak_EVENT`` (40 bytes on 64-bit)."""

    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True)
class RawSpeech:
    """One utterance as eSpeak made it: int16 samples (S,) and its phone events."""

    samples: np.ndarray  # (S,) int16 at sample_rate
    phones: list[tuple[str, int, int]]  # (raw eSpeak phoneme name, start, end) in samples
    end_sample: int | None = None  # where eSpeak's END event says the audio ends
    sample_rate: int = NATIVE_RATE
    # (character position in the text, 1-based; index into ``phones`` of its first phone),
    # one per word event in order. A word event comes before its word's phone events.
    words: tuple[tuple[int, int], ...] = ()


class _Engine:
    """Per-process state: where the private library is, and the audio/event callback."""

    def __init__(self) -> None:
        self.path = private_library()
        self.data = private_data().encode()  # kept alive for espeak_Initialize
        self.chunks: list[bytes] = []
        self.events: list[tuple[int, int, bytes]] = []  # (type, sample, phoneme name)
        self.words: list[tuple[int, int]] = []  # (text position, phone events before it)
        self.phone_count = 0  # phone events so far in this utterance
        self.callback = _Callback(self._on_audio)  # kept alive as long as the engine
        self.checked_unload = False
        self.libc = ctypes.CDLL(None) if os.name == "posix" else None
        if self.libc is not None:
            self.libc.srand.argtypes = [ctypes.c_uint]

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        """eSpeak's callback: ``n`` int16 samples at ``wav``, then the events of this chunk."""
        if n > 0:
            self.chunks.append(ctypes.string_at(wav, 2 * n))
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            event = events[i]
            if event.type == _EV_PHONEME:
                self.events.append((event.type, event.sample, event.id.string))
                self.phone_count += 1
            elif event.type in (_EV_END, _EV_MSG_TERMINATED):
                self.events.append((event.type, event.sample, b""))
            elif event.type == _EV_WORD:
                self.words.append((event.text_position, self.phone_count))
            i += 1
        return 0

    def _load(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self.path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, self.data, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        )
        if rate != NATIVE_RATE:
            self._unload(lib)
            where = self.data.decode(errors="replace")
            raise SynthError(f"eSpeak NG failed to initialise (returned {rate}) from {where}")
        lib.espeak_SetSynthCallback(self.callback)
        return lib

    def _unload(self, lib: ctypes.CDLL) -> None:
        lib.espeak_Terminate()
        _ctypes.dlclose(lib._handle)
        if not self.checked_unload and sys.platform.startswith("linux"):
            self.checked_unload = True
            if self.path in Path("/proc/self/maps").read_text():
                raise SynthError(
                    "eSpeak NG stayed loaded after dlclose; cannot reset its state between "
                    "utterances, so synthesis would not be reproducible"
                )

    def synthesize(
        self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, seed: int
    ) -> RawSpeech:
        lib = self._load()
        try:
            if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise SynthError(f"eSpeak NG does not know voice {voice!r}")
            for param, value in (
                (_PARAM_RATE, rate),
                (_PARAM_PITCH, pitch),
                (_PARAM_RANGE, pitch_range),
            ):
                if lib.espeak_SetParameter(param, int(value), 0) != 0:
                    raise SynthError(f"eSpeak NG rejected parameter {param}={value}")
            lib.espeak_ng_SetRandSeed(int(seed) & 0x7FFFFFFF)  # breathy voices
            if self.libc is not None:
                self.libc.srand(int(seed) & 0x7FFFFFFF)  # Klatt voices use the C library's
            self.chunks, self.events, self.words, self.phone_count = [], [], [], 0
            blob = text.encode("utf-8")
            err = lib.espeak_Synth(
                blob, len(blob) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if err == 0:
                err = lib.espeak_Synchronize()
            if err != 0:
                raise SynthError(f"eSpeak NG failed to speak {text[:40]!r} with {voice} ({err})")
        finally:
            self._unload(lib)
        samples = np.frombuffer(b"".join(self.chunks), dtype=np.int16).copy()
        ends = [sample for kind, sample, _ in self.events if kind == _EV_END]
        spans = _phone_spans(self.events, len(samples))
        leading = len(spans) - self.phone_count  # 1 where a leading pause was added
        words = tuple((position, before + leading) for position, before in self.words)
        return RawSpeech(samples, spans, ends[-1] if ends else None, words=words)


def _phone_spans(
    events: list[tuple[int, int, bytes]], num_samples: int
) -> list[tuple[str, int, int]]:
    """Phone events as (name, start, end) spans: a phone lasts until the next event.

    Samples before the first phone event are leading silence, reported as ``"_"``. Nothing
    is checked here: spans may be empty or go backwards; ``align.clean_spans`` judges them.
    """
    marks = [
        (sample, name.decode("ascii", "replace"))
        for kind, sample, name in events
        if kind == _EV_PHONEME
    ]
    if not marks:
        return []
    spans = [("_", 0, marks[0][0])] if marks[0][0] > 0 else []
    ends = [sample for sample, _ in marks[1:]] + [num_samples]
    spans += [(name, start, end) for (start, name), end in zip(marks, ends, strict=True)]
    return spans


_ENGINE: _Engine | None = None
_ENGINE_PID = -1


def synthesize(
    text: str,
    voice: str,
    rate: int = 175,
    pitch: int = 50,
    pitch_range: int = 50,
    seed: int = 0,
) -> RawSpeech:
    """Speak ``text`` with eSpeak voice name ``voice`` (e.g. ``en-us+m3``) at 22050 Hz.

    ``rate`` is words per minute, ``pitch`` and ``pitch_range`` are 0..99 (50 is the voice's
    own). The result depends only on the arguments (see the module docstring). Voice names
    are not checked here beyond what eSpeak checks; use ``voices.check_voice`` for that.
    """
    global _ENGINE, _ENGINE_PID
    if not text.strip():
        raise SynthError("cannot synthesize empty text")
    lo, hi = RATE_RANGE
    if not lo <= rate <= hi:
        raise SynthError(f"speaking rate {rate} outside {lo}..{hi} words per minute")
    for what, value in (("pitch", pitch), ("pitch range", pitch_range)):
        if not PITCH_RANGE[0] <= value <= PITCH_RANGE[1]:
            raise SynthError(f"{what} {value} outside {PITCH_RANGE[0]}..{PITCH_RANGE[1]}")
    if _ENGINE is None or os.getpid() != _ENGINE_PID:
        _ENGINE, _ENGINE_PID = _Engine(), os.getpid()
    return _ENGINE.synthesize(text, voice, rate, pitch, pitch_range, seed)
