"""A Speech-Commands-like keyword corpus from eSpeak NG.

Layout (that of Google Speech Commands, so the same reader takes it)::

    OUT/<word>/<speaker>_nohash_<n>.wav   1 s, 16 kHz, mono, 16-bit PCM
    OUT/validation_list.txt               dev clips, paths relative to OUT
    OUT/testing_list.txt                  test clips; everything else is train
    OUT/synth.json                        seed, settings, counts, voices
    OUT/channel.txt                       <path> speed=.. tempo=.. rt60=.. mic=.. telephone=..
                                          (only with channel effects: ``channel``)
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

from kdpipe import __version__
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
from kdpipe.corpus.synth.settings import KeywordSynthConfig
from kdpipe.corpus.synth.voices import Voice
from kdpipe.corpus.synth.worker import KeywordJob

DEV_LIST, TEST_LIST = "validation_list.txt", "testing_list.txt"


def plan_keywords(
    config: KeywordSynthConfig,
) -> tuple[list[Voice], dict[str, str], list[KeywordJob], list[str]]:
    """Voices, speaker -> split, one job per clip, and each job's speaker id."""
    voices, split = plan_voices(config)
    rng, channel_rng = rng_for(config, "utterances"), rng_for(config, "channel")
    words = list(config.words)
    tiled = words * -(-config.num_utts // len(words))  # every word equally often (+-1)
    order = [tiled[int(i)] for i in rng.permutation(len(tiled))[: config.num_utts]]
    clip = round(config.clip_seconds * config.sample_rate)
    seen: Counter[tuple[str, str]] = Counter()
    jobs, speakers = [], []
    for i, word in enumerate(order):
        voice = voices[int(rng.integers(len(voices)))]
        spk = voice.speaker_id
        path = f"{word}/{spk}_nohash_{seen[spk, word]}.wav"
        seen[spk, word] += 1
        said, bg = prosody(config, voice, rng), background(config, rng)
        offset, heard = float(rng.random()), channel(config, channel_rng)
        jobs.append(KeywordJob(i, path, word, said, bg, offset, clip, config.sample_rate, heard))
        speakers.append(spk)
    return voices, split, jobs, speakers


def synth_keywords(
    out: str | Path,
    config: KeywordSynthConfig,
    jobs: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> SynthSummary:
    """Synthesize the keyword corpus of ``config`` into folder ``out``.

    ``jobs`` worker processes (default: one per CPU); the files do not depend on it.
    ``out`` must be empty unless ``overwrite`` and it holds an earlier synth output.
    """
    started = time.perf_counter()
    out, workers = Path(out), resolve_jobs(jobs)
    voices, split, plan, speakers = plan_keywords(config)  # bad settings fail before any writing
    keywords = set(config.words)
    talk = [word for word in builtin_words() if word not in keywords]  # babble: no keywords
    results = synthesize_plan(out, config, plan, voices, split, talk,
                              workers=workers, progress=progress, overwrite=overwrite)  # fmt: skip

    lists: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    spk_by_split: dict[str, set[str]] = {"train": set(), "dev": set(), "test": set()}
    dropped: Counter[str] = Counter()
    samples = 0
    for job, spk, result in zip(plan, speakers, results, strict=True):
        if result.error is not None:
            dropped[result.error] += 1
            continue
        lists[split[spk]].append(job.path)
        spk_by_split[split[spk]].add(spk)
        samples += result.num_samples
    written = [(job.path, result) for job, result in zip(plan, results, strict=True)]
    channels = write_channels(out, config, written)
    (out / DEV_LIST).write_text("".join(p + "\n" for p in sorted(lists["dev"])))
    (out / TEST_LIST).write_text("".join(p + "\n" for p in sorted(lists["test"])))
    summary = SynthSummary(
        task="keywords",
        out=out,
        utterances={name: len(paths) for name, paths in lists.items()},
        speakers={name: len(spks) for name, spks in spk_by_split.items()},
        dropped=dict(sorted(dropped.items())),
        num_labels=len(config.words),
        audio_seconds=samples / config.sample_rate,
    )
    write_marker(
        out,
        {
            "task": "keywords",
            "complete": True,
            "kdpipe_version": __version__,
            "config": config.to_dict(),
            "fingerprint": config.fingerprint,
            "utterances": summary.utterances,
            "speakers": summary.speakers,
            "dropped": summary.dropped,
            "words": list(config.words),
            "layout": "Google Speech Commands: <word>/<speaker>_nohash_<n>.wav, "
            f"{DEV_LIST} (dev), {TEST_LIST} (test), everything else train",
            "voices": [{**voice.to_dict(), "split": split[voice.speaker_id]} for voice in voices],
            **channels,
        },
    )
    summary.seconds = time.perf_counter() - started
    return summary
