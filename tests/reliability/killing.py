"""Killing ``kdpipe`` commands at seeded random moments (the kill tests). Not a test module.

Each run is a real process killed with SIGKILL, but forked from multiprocessing's
forkserver, which imported torch, zarr and kdpipe once: a restart then costs its own work,
not five seconds of imports, so a test can afford ten kills per command.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PRELOAD = ["numpy", "torch", "zarr", "kdpipe.cli.main", "kdpipe.teach", "kdpipe.learn.kd",
           "kdpipe.learn.supervised", "kdpipe.pipeline", "kdpipe.store.writer"]  # fmt: skip


def _context() -> multiprocessing.context.BaseContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def _kdpipe(args: list[str], env: dict[str, str], paths: list[str], log: str) -> None:
    """The child: ``kdpipe ARGS`` with stdout and stderr appended to ``log``."""
    os.environ.update(env)
    sys.path[:0] = paths
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    from kdpipe.cli.main import app

    code = 0
    try:
        app(args=args, prog_name="kdpipe")
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else 1
    except BaseException:  # a traceback: the log shows it, the exit code says it
        import traceback

        traceback.print_exc()
        code = 99
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@dataclass
class Command:
    """``kdpipe ARGS`` run in forked children; ``log`` collects every run's output."""

    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    paths: list[str] = field(default_factory=list)

    def start(self) -> multiprocessing.process.BaseProcess:
        process = _context().Process(  # type: ignore[attr-defined]
            target=_kdpipe, args=(self.args, self.env, self.paths, str(self.log))
        )
        process.start()
        return process

    def run(self, timeout: float = 300) -> float:
        """Run to the end; its wall time. Fails the test on a non-zero exit."""
        begin = time.monotonic()
        process = self.start()
        process.join(timeout)
        assert process.exitcode == 0, f"exit {process.exitcode}:\n{self.log.read_text()[-3000:]}"
        return time.monotonic() - begin

    def kill_at(self, moments: Sequence[float]) -> int:
        """Start, SIGKILL at each moment (seconds after that start) in turn, restarting
        after each kill; a run that ends before its moment ends the series (and must have
        succeeded). Returns the number of kills: fewer than the moments if a run ended."""
        kills = 0
        for moment in moments:
            process = self.start()
            process.join(moment)
            if process.exitcode is None:
                assert process.pid is not None
                os.kill(process.pid, signal.SIGKILL)
                process.join()
            if process.exitcode != -signal.SIGKILL:  # it ended first: the series ends
                assert process.exitcode == 0, self.log.read_text()[-3000:]
                break
            kills += 1
            with self.log.open("a") as log:
                log.write(f"\n--- SIGKILL at {moment:.3f} s ---\n")
        return kills


def moments(seed: int, setup: float, work: float, count: int = 10) -> list[float]:
    """``count`` seeded moments between half the ``setup`` (a run's start-up, measured as a
    rerun with nothing to do) and ``setup`` plus 6% of the ``work`` (the rest of an
    uninterrupted run): their progress together stays under one run's work, so every
    kill lands before the end, in start-up, scanning, or the first steps of work."""
    rng = np.random.default_rng(seed)
    return [float(m) for m in rng.uniform(0.5 * setup, setup + 0.06 * work, size=count)]
