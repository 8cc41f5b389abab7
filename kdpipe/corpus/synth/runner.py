"""Running synthesis jobs: the output folder, the babble bank, worker processes, progress,
the summary, the record of the recording channels.

Workers are forked (or spawned where threads run; each loads its own eSpeak); ``jobs=1``
runs in this process. Jobs are cut into fixed batches and results put back in job order,
so the output does not depend on the number of workers.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.table import Table

from kdpipe.console import progress_bar
from kdpipe.corpus.synth import channel, worker
from kdpipe.corpus.synth.draws import babble_bank, needs_babble
from kdpipe.corpus.synth.settings import BaseSynthConfig
from kdpipe.corpus.synth.voices import Voice
from kdpipe.corpus.synth.worker import KeywordJob, PhoneJob, Result
from kdpipe.errors import SynthError

MARKER = "synth.json"  # written first (incomplete) and last (complete) into every output
CHANNELS = "channel.txt"  # each utterance's recording channel, when the config has one
BATCH = 16  # utterances per task sent to a worker (~0.1 s of work)


@dataclass
class SynthSummary:
    """What a synthesis run made."""

    task: str
    out: Path
    utterances: dict[str, int]  # split -> utterances written
    speakers: dict[str, int]  # split -> speakers
    dropped: dict[str, int] = field(default_factory=dict)  # reason -> utterances dropped
    num_labels: int = 0  # size of the label set (keywords: words)
    audio_seconds: float = 0.0
    seconds: float = 0.0  # wall time of the run

    @property
    def total(self) -> int:
        return sum(self.utterances.values())

    def table(self) -> Table:
        """A rich table: utterances and speakers per split."""
        table = Table(title=f"{self.out} ({self.task})", title_justify="left")
        for col in ("split", "utterances", "speakers"):
            table.add_column(col, justify="left" if col == "split" else "right")
        for split, n in self.utterances.items():
            table.add_row(split, str(n), str(self.speakers.get(split, 0)))
        return table

    def line(self) -> str:
        dropped = sum(self.dropped.values())
        return (
            f"{self.total} utterances ({dropped} dropped), {self.audio_seconds / 60:.1f} min "
            f"of audio, {self.num_labels} labels; {self.seconds:.1f} s"
        )


def prepare_out(out: Path, overwrite: bool) -> None:
    """Make ``out`` an empty folder; clear it only if ``overwrite`` and it is a synth output."""
    if out.exists() and not out.is_dir():
        raise SynthError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise SynthError(
                f"output folder {out} is not empty; use --overwrite to replace a previous "
                "synth output, or pick an empty folder"
            )
        if not (out / MARKER).is_file():
            raise SynthError(
                f"refusing to clear {out}: it is not empty and has no {MARKER}, so it is not "
                "a kdpipe synth output; pick an empty folder"
            )
        for child in out.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def write_marker(out: Path, content: dict[str, Any]) -> None:
    """``synth.json``: deterministic (no times, no absolute paths)."""
    (out / MARKER).write_text(json.dumps(content, indent=1, sort_keys=True) + "\n")


def write_channels(
    out: Path, config: BaseSynthConfig, written: Sequence[tuple[str, Result]]
) -> dict[str, Any]:
    """``channel.txt`` (``<utterance> speed=.. tempo=.. rt60=.. mic=.. telephone=..``, the
    channel each written utterance got, in name order) and what synth.json says of it;
    nothing without channel effects (the corpus is as it was before they existed)."""
    if not config.has_channel:
        return {}
    rows = sorted(
        ((name, result.channel) for name, result in written if result.error is None),
        key=lambda row: row[0],
    )
    (out / CHANNELS).write_text("".join(f"{name} {ch.describe()}\n" for name, ch in rows))
    return {"channel": {"file": CHANNELS, **channel.summary([ch for _, ch in rows])}}


def resolve_jobs(jobs: int | None) -> int:
    """``jobs`` checked, or the CPUs this process may use when None."""
    if jobs is None:
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not on Linux
            return max(1, os.cpu_count() or 1)
    if jobs < 1:
        raise SynthError(f"--jobs must be >= 1, got {jobs}")
    return jobs


def synthesize_plan(
    out: Path,
    config: BaseSynthConfig,
    plan: Sequence[KeywordJob | PhoneJob],
    voices: Sequence[Voice],
    split: dict[str, str],
    babble_words: Sequence[str],
    *,
    workers: int,
    progress: bool,
    overwrite: bool,
) -> list[Result]:
    """Both tasks' run: clear ``out`` (``prepare_out``) and mark it incomplete, make the
    babble bank when the noise needs one (train voices saying ``babble_words``), then run
    every job of ``plan``."""
    prepare_out(out, overwrite)
    write_marker(out, {"task": config.TASK, "complete": False})
    if config.has_channel:
        channel.preload()  # before the workers fork, so that none imports scipy again
    bank = None
    if needs_babble(config):
        train = [voice for voice in voices if split[voice.speaker_id] == "train"]
        bank = babble_bank(config, train, babble_words)
    return run_jobs(out, plan, workers, bank, progress, f"synth {config.TASK}")


def run_jobs(
    out: Path,
    jobs: Sequence[KeywordJob | PhoneJob],
    workers: int,
    babble: np.ndarray | None,
    progress: bool,
    description: str,
) -> list[Result]:
    """Run every job (writing its wav under ``out``) in ``workers`` processes, in job order."""
    batches = [list(jobs[i : i + BATCH]) for i in range(0, len(jobs), BATCH)]
    bar = progress_bar(description, len(jobs), enabled=progress, transient=False)
    results: list[Result] = []
    if workers > 1 and len(batches) > 1:
        results = _run_pool(out, batches, min(workers, len(batches)), babble, bar)
    else:
        worker.init_worker(babble)
        try:
            with bar as advance:
                for batch in batches:
                    results += worker.run_batch(str(out), batch)
                    advance(len(batch))
        finally:
            worker.init_worker(None)
    results.sort(key=lambda r: r.index)
    return results


def _run_pool(out: Path, batches: list, workers: int, babble: Any, bar: Any) -> list[Result]:
    # fork (fast, and fine in scripts without a __main__ guard) unless threads run here,
    # where forking is unsafe; the output is the same either way.
    fork = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    ctx = multiprocessing.get_context("fork" if fork else "spawn")
    results: list[Result] = []
    with ProcessPoolExecutor(workers, ctx, worker.init_worker, (babble,)) as pool:
        # all workers start at the first submit, before the progress bar's thread exists
        pending = {pool.submit(worker.run_batch, str(out), batch): len(batch) for batch in batches}
        try:
            with bar as advance:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                    for future in done:
                        results += future.result()  # re-raises a worker's error here
                        advance(pending.pop(future))
        except BrokenProcessPool:
            pool.shutdown(wait=True, cancel_futures=True)
            how = "forked" if fork else "spawned (threads run here, so no fork)"
            raise SynthError(
                f"a synthesis worker process died; workers were {how}. Spawned workers "
                "import the main script again: guard it with if __name__ == '__main__', or "
                "use jobs=1"
            ) from None
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results
