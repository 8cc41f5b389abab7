"""Sentences with frame-level labels from eSpeak NG, written as Kaldi data folders.

Layout::

    OUT/wav/<utt>.wav                     16 kHz, mono, 16-bit PCM
    OUT/{train,dev,test}/wav.scp          <utt> wav/<utt>.wav  (relative to OUT)
    OUT/{train,dev,test}/text             <utt> <words>
    OUT/{train,dev,test}/utt2spk, spk2utt
    OUT/{train,dev,test}/ali.txt          <utt> <label> <label> ...  (one per 10 ms frame)
    OUT/labels.txt                        the label set, one name per line, index order
    OUT/lexicon.txt                       <word> <phone> ...  as spoken (``spoken``)
    OUT/synth.json                        seed, settings, counts, voices
    OUT/channel.txt                       <utt> speed=.. tempo=.. rt60=.. mic=.. telephone=..
                                          (only with channel effects: ``channel``)

Utterance ids are ``<speaker>-<index>`` so Kaldi's sort orders agree. Frame ``i`` is
labelled with the unit active at ``FbankConfig.frame_center(i)``; each ali line has exactly
``FbankConfig.num_frames(samples)`` labels.

With ``labels="aligned"`` the corpus is a transcribed one, for an aligner to label (the same
audio, sentences and voices as with ``labels="true"``): the split folders have no ali.txt,
there is no OUT/labels.txt, and the truth is kept apart::

    OUT/reference/labels.txt              the --units label set (OUT/labels.txt otherwise)
    OUT/reference/{split}/phones.txt      <utt> <phone> <phone> ...  (one per 10 ms frame)
    OUT/reference/{split}/<units>.txt     --units states / cd: <utt> <label> ... (ali.txt)
    OUT/reference/{split}/phones.ctm      <utt> 1 <start s> <duration s> <phone>: true spans
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdpipe import __version__
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.synth.draws import (
    background,
    builtin_words,
    channel,
    plan_voices,
    prosody,
    rng_for,
)
from kdpipe.corpus.synth.runner import (
    SynthSummary,
    resolve_jobs,
    synthesize_plan,
    write_channels,
    write_marker,
)
from kdpipe.corpus.synth.settings import PhoneSynthConfig
from kdpipe.corpus.synth.spoken import SpokenSentence, spoken_lexicon
from kdpipe.corpus.synth.units import (
    Unit,
    frame_units,
    label_frames,
    monophone_labels,
    tie_triphones,
)
from kdpipe.corpus.synth.voices import Voice
from kdpipe.corpus.synth.worker import PhoneJob, Result
from kdpipe.errors import SynthError
from kdpipe.labels import LabelSet
from kdpipe.textfile import read_text

SPLITS = ("train", "dev", "test")
REFERENCE = "reference"  # the true labels of an aligned corpus, apart from its split folders
LEXICON = "lexicon.txt"  # an aligned corpus's pronunciations, as spoken
_NOT_SPOKEN = re.compile(r"[^\w']+|_")  # punctuation makes eSpeak pause without an event


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, punctuation turned into spaces."""
    p = Path(path)
    lines = read_text(p, SynthError, "text file").splitlines()
    out = [" ".join(_NOT_SPOKEN.sub(" ", line).split()) for line in lines]
    out = [s for s in out if s]
    if not out:
        raise SynthError(f"{p}: no sentences in it")
    return out


def plan_phones(
    config: PhoneSynthConfig,
) -> tuple[list[Voice], dict[str, str], list[PhoneJob], list[str]]:
    """Voices, speaker -> split, one job per sentence, and each job's speaker id."""
    voices, split = plan_voices(config)
    rng, channel_rng = rng_for(config, "utterances"), rng_for(config, "channel")
    words = builtin_words()
    sentences = read_sentences(config.text_file) if config.text_file else None
    order = rng.permutation(len(sentences)) if sentences else None
    lo, hi = config.pad_seconds
    jobs, speakers = [], []
    for i in range(config.num_utts):
        voice = voices[int(rng.integers(len(voices)))]
        if sentences is not None and order is not None:
            text = sentences[int(order[i % len(order)])]
        else:
            n = int(rng.integers(config.min_words, config.max_words + 1))
            text = " ".join(words[int(j)] for j in rng.integers(len(words), size=n))
        said, bg = prosody(config, voice, rng), background(config, rng)
        pad_before = round(float(rng.uniform(lo, hi)) * config.sample_rate)
        pad_after = round(float(rng.uniform(lo, hi)) * config.sample_rate)
        utt = f"{voice.speaker_id}-{i:06d}"
        pad, heard = (pad_before, pad_after), channel(config, channel_rng)
        jobs.append(PhoneJob(i, f"wav/{utt}.wav", text, said, bg, pad, config.sample_rate, heard))
        speakers.append(voice.speaker_id)
    return voices, split, jobs, speakers


def synth_phones(
    out: str | Path,
    config: PhoneSynthConfig,
    jobs: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthSummary:
    """Synthesize the sentence corpus of ``config`` into folder ``out``: with frame labels,
    or (``config.labels == "aligned"``) transcribed, its truth under ``reference/``.

    ``jobs`` worker processes (default: one per CPU); the files do not depend on it.
    Utterances whose phone timings fail the checks are dropped and counted in the summary.
    """
    started = time.perf_counter()
    out, workers = Path(out), resolve_jobs(jobs)
    voices, split, plan, speakers = plan_phones(config)  # bad settings fail before any writing
    results = synthesize_plan(out, config, plan, voices, split, builtin_words(),
                              workers=workers, progress=progress, overwrite=overwrite)  # fmt: skip

    fbank = FbankConfig(sample_rate=config.sample_rate)
    kept: list[KeptUtterance] = []
    dropped: Counter[str] = Counter()
    samples = 0
    for job, spk, result in zip(plan, speakers, results, strict=True):
        if result.error is not None:
            dropped[result.error] += 1
            continue
        units = frame_units(result.spans, fbank.num_frames(result.num_samples), fbank)
        kept.append(KeptUtterance(Path(job.path).stem, spk, job, result, units))
        samples += result.num_samples
    if config.units == "cd":
        counts: Counter[Unit] = Counter()
        for utterance in kept:
            if split[utterance.speaker] == "train":
                counts.update(utterance.units)
        names = tie_triphones(counts, config.num_states, config.min_state_frames)
    else:
        names = monophone_labels(config.units)
    labels = LabelSet.from_names(names)
    cd = frozenset(names)

    per_split: dict[str, list[KeptUtterance]] = {name: [] for name in SPLITS}
    for utterance in sorted(kept, key=lambda utterance: utterance.utt_id):
        per_split[split[utterance.speaker]].append(utterance)
    accents = {voice.speaker_id: voice.accent for voice in voices}
    lexicon = spoken_lexicon(  # the words as spoken: for alignment, and word graphs
        SpokenSentence(utterance.job.text, accents[utterance.speaker], utterance.result.words)
        for utterance in kept
    )
    lexicon.write(out / LEXICON)
    channels = write_channels(out, config, [(u.utt_id, u.result) for u in kept])
    if config.labels == "true":
        labels.write(out / "labels.txt")
        for name, rows in per_split.items():
            ali = [label_frames(utterance.units, config.units, cd) for utterance in rows]
            _write_kaldi_dir(out / name, rows, {"ali.txt": _table(rows, ali)})
    else:
        for name, rows in per_split.items():
            _write_kaldi_dir(out / name, rows, {})
        _write_reference(out / REFERENCE, per_split, config, labels, cd)
    text_sha = _sha256(config.text_file) if config.text_file else None
    summary = SynthSummary(
        task="phones",
        out=out,
        utterances={name: len(rows) for name, rows in per_split.items()},
        speakers={
            name: len({utterance.speaker for utterance in rows}) for name, rows in per_split.items()
        },
        dropped=dict(sorted(dropped.items())),
        num_labels=len(labels),
        audio_seconds=samples / config.sample_rate,
    )
    write_marker(
        out,
        {
            "task": "phones",
            "complete": True,
            "kdpipe_version": __version__,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint,
            "text_file_sha256": text_sha,
            "units": config.units,
            "num_labels": len(labels),
            "labels_fingerprint": labels.fingerprint,
            "features": fbank.to_dict(),
            "utterances": summary.utterances,
            "speakers": summary.speakers,
            "dropped": summary.dropped,
            "wav_paths": "relative to this folder",
            "voices": [{**voice.to_dict(), "split": split[voice.speaker_id]} for voice in voices],
            "lexicon": {"file": LEXICON, **lexicon.counts.to_dict()},
            **(_aligned_marker(config) if config.labels == "aligned" else {}),
            **channels,
        },
    )
    summary.seconds = time.perf_counter() - started
    return summary


@dataclass(frozen=True)
class KeptUtterance:
    """An utterance that was written: its id, speaker, job, result and frame units."""

    utt_id: str
    speaker: str
    job: PhoneJob
    result: Result
    units: list[Unit]


def _table(rows: list[KeptUtterance], values: list[list[str]]) -> list[str]:
    """Kaldi table lines ``<utt> <value> <value> ...``, one per row."""
    return [
        f"{utterance.utt_id} {' '.join(row)}" for utterance, row in zip(rows, values, strict=True)
    ]


def _write_kaldi_dir(folder: Path, rows: list[KeptUtterance], more: dict[str, list[str]]) -> None:
    """wav.scp, text, utt2spk, spk2utt and the tables of ``more`` for rows sorted by
    utterance id."""
    folder.mkdir(parents=True, exist_ok=True)
    by_spk: dict[str, list[str]] = {}
    for utterance in rows:
        by_spk.setdefault(utterance.speaker, []).append(utterance.utt_id)
    files = {
        "wav.scp": [f"{utterance.utt_id} {utterance.job.path}" for utterance in rows],
        "text": [f"{utterance.utt_id} {utterance.job.text}" for utterance in rows],
        "utt2spk": [f"{utterance.utt_id} {utterance.speaker}" for utterance in rows],
        "spk2utt": [f"{spk} {' '.join(utts)}" for spk, utts in sorted(by_spk.items())],
        **more,
    }
    for name, lines in files.items():
        _write_lines(folder / name, lines)


def _write_reference(
    folder: Path,
    per_split: dict[str, list[KeptUtterance]],
    config: PhoneSynthConfig,
    labels: LabelSet,
    cd: frozenset[str],
) -> None:
    """The truth of an aligned corpus: the --units label set, then per split the true
    phone (and --units label) of every frame and the true phone spans."""
    folder.mkdir(parents=True, exist_ok=True)
    labels.write(folder / "labels.txt")
    rate = config.sample_rate
    for name, rows in per_split.items():
        (folder / name).mkdir(exist_ok=True)
        phones = [label_frames(utterance.units, "phones", cd) for utterance in rows]
        _write_lines(folder / name / "phones.txt", _table(rows, phones))
        if config.units != "phones":
            ali = [label_frames(utterance.units, config.units, cd) for utterance in rows]
            _write_lines(folder / name / f"{config.units}.txt", _table(rows, ali))
        ctm = [
            f"{utterance.utt_id} 1 {start / rate:.6f} {(end - start) / rate:.6f} {phone}"
            for utterance in rows
            for phone, start, end in utterance.result.spans
        ]
        _write_lines(folder / name / "phones.ctm", ctm)


def _aligned_marker(config: PhoneSynthConfig) -> dict[str, Any]:
    """What synth.json adds for an aligned corpus: where the truth is."""
    alignments = ["phones"] + ([config.units] if config.units != "phones" else [])
    return {
        "labels": config.labels,
        "reference": {
            "folder": REFERENCE,
            "labels": f"{REFERENCE}/labels.txt",
            "alignments": {kind: f"{REFERENCE}/{{split}}/{kind}.txt" for kind in alignments},
            "spans": f"{REFERENCE}/{{split}}/phones.ctm",
        },
    }


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_text("".join(line + "\n" for line in lines))


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
