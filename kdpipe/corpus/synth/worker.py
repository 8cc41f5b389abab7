"""What one worker process does for one utterance: speak, place, pass it through its
recording channel, add noise, write the wav.

A job carries every random choice already made (by the planner, from the seed), plus
seeds for the noise samples and the room, so its output depends on nothing else: not on
the worker, not on what the worker did before. Shapes: audio is (S,) float32 at the corpus
rate. The channel's order (``channel``): speed / tempo of the dry speech (its spans scaled)
-> room -> background noise (its SNR on the reverberant speech) -> microphone ->
telephone -> peak level -> 16-bit PCM.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdpipe.corpus.synth import channel as channel_mod
from kdpipe.corpus.synth import noise as noise_mod
from kdpipe.corpus.synth.align import AlignmentIssue, Span
from kdpipe.corpus.synth.audio import synthesize_spans, synthesize_words
from kdpipe.corpus.synth.channel import CLEAN, Channel
from kdpipe.corpus.synth.phonemes import SIL
from kdpipe.corpus.synth.spoken import Pronunciation
from kdpipe.errors import SynthError

MARGIN_S = 0.03  # keep this much around a keyword's first and last phone when trimming
MAX_RATE = 450  # eSpeak's fastest rate
RETRIES = 4  # speed-ups tried (x1.25 each) when a keyword does not fit its clip

_BABBLE: np.ndarray | None = None  # this process's babble bank (set by ``init_worker``)


def init_worker(babble: np.ndarray | None) -> None:
    """Pool initializer: keep the babble bank (made once by the parent) in this process."""
    global _BABBLE
    _BABBLE = babble


@dataclass(frozen=True)
class Prosody:
    voice: str  # eSpeak voice name, accent+variant
    rate: int
    pitch: int
    pitch_range: int
    seed: int  # eSpeak's own random generator (breathy voices)


@dataclass(frozen=True)
class Background:
    kind: str  # none | white | pink | babble
    snr_db: float
    level_db: float  # peak level of the written file, dBFS
    seed: int  # noise samples


@dataclass(frozen=True)
class KeywordJob:
    index: int
    path: str  # wav path relative to the output folder
    word: str
    prosody: Prosody
    background: Background
    offset: float  # where in the free room of the clip the word starts, 0..1
    clip_samples: int
    sample_rate: int
    channel: Channel = CLEAN  # the recording channel (``CLEAN``: none)


@dataclass(frozen=True)
class PhoneJob:
    index: int
    path: str
    text: str
    prosody: Prosody
    background: Background
    pad: tuple[int, int]  # silence samples before and after
    sample_rate: int
    channel: Channel = CLEAN  # the recording channel (``CLEAN``: none)


@dataclass(frozen=True)
class Result:
    index: int
    error: str | None  # why the utterance was dropped (None: written)
    num_samples: int = 0
    spans: tuple[tuple[str, int, int], ...] = ()  # phone spans (phone task only)
    words: tuple[Pronunciation | None, ...] = ()  # each word's phones as spoken (phone task)
    channel: Channel = CLEAN  # the channel applied (a keyword too long for its clip at the
    # drawn speed / tempo is said at 1)


def run_batch(out: str, jobs: list[KeywordJob | PhoneJob]) -> list[Result]:
    """Run jobs in order, writing wavs under ``out``; alignment trouble drops an utterance."""
    results = []
    for job in jobs:
        try:
            if isinstance(job, KeywordJob):
                results.append(_keyword(Path(out), job))
            else:
                results.append(_phones(Path(out), job))
        except AlignmentIssue as error:
            results.append(Result(job.index, str(error)))
        except SynthError as error:
            raise SynthError(f"utterance {job.path}: {error}") from None
    return results


def _keyword(out: Path, job: KeywordJob) -> Result:
    prosody, sr = job.prosody, job.sample_rate
    margin = round(MARGIN_S * sr)
    rate = prosody.rate
    for _ in range(RETRIES + 1):
        audio, spans = synthesize_spans(
            job.word, prosody.voice, rate, prosody.pitch, prosody.pitch_range, prosody.seed, sr
        )
        if not any(phone != SIL for phone, _, _ in spans):
            return Result(job.index, "no phones in keyword")
        start, end = _trim(spans, margin, len(audio))
        if end - start <= job.clip_samples:
            break
        rate = min(MAX_RATE, round(rate * 1.25))
    else:
        return Result(job.index, "keyword longer than the clip even at the fastest rate")
    channel = job.channel
    if channel.changes_duration:  # speed / tempo on the word, unless it no longer fits
        try:
            said, said_spans = channel_mod.perturb(audio, spans, channel, sr)
            said_start, said_end = _trim(said_spans, margin, len(said))
            fits = said_end - said_start <= job.clip_samples
        except AlignmentIssue:  # a phone vanished at this speed: the word as said
            fits = False
        if fits:
            audio, spans, start, end = said, said_spans, said_start, said_end
        else:
            channel = channel.without_perturbation()
    voiced = [(s, e) for phone, s, e in spans if phone != SIL]
    word = audio[start:end]  # (W,)
    offset = int(job.offset * (job.clip_samples - len(word)))
    clip = np.zeros(job.clip_samples, dtype=np.float32)  # (S,)
    clip[offset : offset + len(word)] = word
    spoken = slice(offset + voiced[0][0] - start, offset + voiced[-1][1] - start)
    _finish_and_write(out / job.path, clip, spoken, job.background, channel, sr)
    return Result(job.index, None, len(clip), channel=channel)


def _trim(spans: list[Span], margin: int, length: int) -> tuple[int, int]:
    """[start, end) of a word's first to last phone, ``margin`` samples around."""
    voiced = [(start, end) for phone, start, end in spans if phone != SIL]
    return max(0, voiced[0][0] - margin), min(length, voiced[-1][1] + margin)


def _phones(out: Path, job: PhoneJob) -> Result:
    prosody, sr = job.prosody, job.sample_rate
    audio, spans, words = synthesize_words(
        job.text, prosody.voice, prosody.rate, prosody.pitch, prosody.pitch_range, prosody.seed, sr
    )
    audio, spans = channel_mod.perturb(audio, spans, job.channel, sr)  # speed / tempo
    before, after = job.pad
    audio = np.concatenate([np.zeros(before, np.float32), audio, np.zeros(after, np.float32)])
    n = len(audio)
    edges = [(SIL, 0, before)] if before else []
    edges += [(phone, start + before, end + before) for phone, start, end in spans]
    edges += [(SIL, n - after, n)] if after else []
    shifted: list[tuple[str, int, int]] = []
    for phone, start, end in edges:  # padding joins eSpeak's own leading/trailing pause
        if shifted and phone == SIL and shifted[-1][0] == SIL:
            shifted[-1] = (SIL, shifted[-1][1], end)
        else:
            shifted.append((phone, start, end))
    voiced = [(start, end) for phone, start, end in shifted if phone != SIL]
    if not voiced:
        return Result(job.index, "no phones in sentence")
    spoken = slice(voiced[0][0], voiced[-1][1])
    _finish_and_write(out / job.path, audio, spoken, job.background, job.channel, sr)
    return Result(job.index, None, n, tuple(shifted), words, job.channel)


def _finish_and_write(
    path: Path, audio: np.ndarray, spoken: slice, bg: Background, ch: Channel, sample_rate: int
) -> None:
    """The room, background noise at the job's SNR (on the speech in the room), the
    microphone and the telephone line, then scale to the peak level, write 16-bit PCM."""
    import soundfile as sf  # soundfile stays out of light importers (the synth package)

    if ch.rt60 is not None:
        ir = channel_mod.room_impulse(np.random.default_rng(ch.seed), ch.rt60, sample_rate)
        audio = channel_mod.reverberate(audio, ir)
    rng = np.random.default_rng(bg.seed)
    if bg.kind == "white":
        audio = noise_mod.add_noise(audio, noise_mod.white(rng, len(audio)), bg.snr_db, spoken)
    elif bg.kind == "pink":
        audio = noise_mod.add_noise(audio, noise_mod.pink(rng, len(audio)), bg.snr_db, spoken)
    elif bg.kind == "babble":
        if _BABBLE is None:
            raise RuntimeError("babble noise asked for but no babble bank was made")
        noise = noise_mod.babble(rng, len(audio), _BABBLE)
        audio = noise_mod.add_noise(audio, noise, bg.snr_db, spoken)
    if ch.mic is not None:
        audio = channel_mod.microphone(audio, ch.mic, sample_rate)
    if ch.telephone is not None:
        audio = channel_mod.telephone(audio, ch.telephone, sample_rate)
    peak = float(np.max(np.abs(audio))) if len(audio) else 0.0
    if peak > 0:
        audio = audio * (10.0 ** (bg.level_db / 20.0) / peak)
    pcm = np.clip(np.round(audio * 32767.0), -32768, 32767).astype(np.int16)  # (S,)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), pcm, sample_rate, subtype="PCM_16", format="WAV")
