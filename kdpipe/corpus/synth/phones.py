"""Sentences with frame-level labels from eSpeak NG, written as Kaldi data folders.

Layout::

    OUT/wav/<utt>.wav                     16 kHz, mono, 16-bit PCM
    OUT/{train,dev,test}/wav.scp          <utt> wav/<utt>.wav  (relative to OUT)
    OUT/{train,dev,test}/text             <utt> <words>
    OUT/{train,dev,test}/utt2spk, spk2utt
    OUT/{train,dev,test}/ali.txt          <utt> <label> <label> ...  (one per 10 ms frame)
    OUT/labels.txt                        the label set, one name per line, index order
    OUT/synth.json                        seed, settings, counts, voices

Utterance ids are ``<speaker>-<index>`` so Kaldi's sort orders agree. Frame ``i`` is
labelled with the unit active at ``FbankConfig.frame_center(i)``; each ali line has exactly
``FbankConfig.num_frames(samples)`` labels.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections import Counter
from pathlib import Path

from kdpipe import __version__
from kdpipe.corpus.features import FbankConfig
from kdpipe.corpus.synth.draws import background, builtin_words, plan_voices, prosody, rng_for
from kdpipe.corpus.synth.runner import SynthSummary, resolve_jobs, synthesize_plan, write_marker
from kdpipe.corpus.synth.settings import PhoneSynthConfig
from kdpipe.corpus.synth.units import (
    Unit,
    frame_units,
    label_frames,
    monophone_labels,
    tie_triphones,
)
from kdpipe.corpus.synth.voices import Voice
from kdpipe.corpus.synth.worker import PhoneJob
from kdpipe.errors import SynthError
from kdpipe.labels import LabelSet

SPLITS = ("train", "dev", "test")
_NOT_SPOKEN = re.compile(r"[^\w']+|_")  # punctuation makes eSpeak pause without an event


def read_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a text file, punctuation turned into spaces."""
    p = Path(path)
    if not p.is_file():
        raise SynthError(f"text file not found: {p}")
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise SynthError(f"{p}: not UTF-8 text") from None
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
    rng = rng_for(config, "utterances")
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
        pad = (pad_before, pad_after)
        jobs.append(PhoneJob(i, f"wav/{utt}.wav", text, said, bg, pad, config.sample_rate))
        speakers.append(voice.speaker_id)
    return voices, split, jobs, speakers


def synth_phones(
    out: str | Path,
    config: PhoneSynthConfig,
    jobs: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthSummary:
    """Synthesize the sentence corpus of ``config`` with frame labels into folder ``out``.

    ``jobs`` worker processes (default: one per CPU); the files do not depend on it.
    Utterances whose phone timings fail the checks are dropped and counted in the summary.
    """
    started = time.perf_counter()
    out, workers = Path(out), resolve_jobs(jobs)
    voices, split, plan, speakers = plan_phones(config)  # bad settings fail before any writing
    results = synthesize_plan(out, config, plan, voices, split, builtin_words(),
                              workers=workers, progress=progress, overwrite=overwrite)  # fmt: skip

    fbank = FbankConfig(sample_rate=config.sample_rate)
    kept: list[tuple[str, str, PhoneJob, list[Unit]]] = []  # (utt id, speaker, job, units)
    dropped: Counter[str] = Counter()
    samples = 0
    for job, spk, result in zip(plan, speakers, results, strict=True):
        if result.error is not None:
            dropped[result.error] += 1
            continue
        units = frame_units(result.spans, fbank.num_frames(result.num_samples), fbank)
        kept.append((Path(job.path).stem, spk, job, units))
        samples += result.num_samples
    if config.units == "cd":
        counts: Counter[Unit] = Counter()
        for _, spk, _, units in kept:
            if split[spk] == "train":
                counts.update(units)
        names = tie_triphones(counts, config.num_states, config.min_state_frames)
    else:
        names = monophone_labels(config.units)
    labels = LabelSet.from_names(names)
    labels.write(out / "labels.txt")
    cd = frozenset(names)

    per_split: dict[str, list] = {name: [] for name in SPLITS}
    for utt, spk, job, units in kept:
        per_split[split[spk]].append((utt, spk, job, label_frames(units, config.units, cd)))
    for name, rows in per_split.items():
        _write_kaldi_dir(out / name, sorted(rows, key=lambda row: row[0]))
    text_sha = _sha256(config.text_file) if config.text_file else None
    summary = SynthSummary(
        task="phones",
        out=out,
        utterances={name: len(rows) for name, rows in per_split.items()},
        speakers={name: len({row[1] for row in rows}) for name, rows in per_split.items()},
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
        },
    )
    summary.seconds = time.perf_counter() - started
    return summary


def _write_kaldi_dir(folder: Path, rows: list) -> None:
    """wav.scp, text, utt2spk, spk2utt and ali.txt for rows sorted by utterance id."""
    folder.mkdir(parents=True, exist_ok=True)
    by_spk: dict[str, list[str]] = {}
    for utt, spk, _, _ in rows:
        by_spk.setdefault(spk, []).append(utt)
    files = {
        "wav.scp": [f"{utt} {job.path}" for utt, _, job, _ in rows],
        "text": [f"{utt} {job.text}" for utt, _, job, _ in rows],
        "utt2spk": [f"{utt} {spk}" for utt, spk, _, _ in rows],
        "spk2utt": [f"{spk} {' '.join(utts)}" for spk, utts in sorted(by_spk.items())],
        "ali.txt": [f"{utt} {' '.join(labels)}" for utt, _, _, labels in rows],
    }
    for name, lines in files.items():
        (folder / name).write_text("".join(line + "\n" for line in lines))


def _sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
