"""Decoding many utterances: in this process, or in worker processes that each load the
graph once (``--jobs``), with one progress bar.

The graph travels as a file (an FST written by kaldifst, read back by every worker at
start); each task is a few utterances' (T_i, C) log-posteriors with the priors and the
acoustic scale, and comes back as their ``Hypothesis`` in order. Workers are spawned, so
that threads of the parent (zarr, torch) never fork.
"""

from __future__ import annotations

import multiprocessing
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.console import progress_bar
from kdpipe.decode.hybrid import DecodeOptions, Hypothesis, decode_scores, pseudo_loglik

TASK_UTTERANCES = 8  # utterances a task: small enough to balance jobs, large enough to amortise

_worker_fst: Any = None  # the graph of a worker process, read once by _load


def _load(path: str) -> None:
    import kaldifst

    global _worker_fst
    _worker_fst = kaldifst.StdVectorFst.read(path)


def _best_paths(
    fst: Any, logps: Sequence[np.ndarray], log_prior: np.ndarray, opts: DecodeOptions
) -> list[Hypothesis]:
    scale = opts.acoustic_scale
    assert scale is not None
    return [decode_scores(fst, pseudo_loglik(logp, log_prior, scale), opts) for logp in logps]


def _task(logps: list[np.ndarray], log_prior: np.ndarray, opts: DecodeOptions) -> list[Hypothesis]:
    return _best_paths(_worker_fst, logps, log_prior, opts)


class Decoder:
    """Best paths through one graph, with ``jobs`` worker processes (1: this process)."""

    def __init__(self, fst: Any, jobs: int = 1, progress: bool = True) -> None:
        self.fst, self.jobs, self.progress = fst, max(int(jobs), 1), progress
        self._pool: ProcessPoolExecutor | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> Decoder:
        if self.jobs > 1:
            self._tmp = tempfile.TemporaryDirectory(prefix="kdpipe-decode-")
            path = str(Path(self._tmp.name) / "graph.fst")
            self.fst.write(path)
            self._pool = ProcessPoolExecutor(
                self.jobs, multiprocessing.get_context("spawn"), _load, (path,)
            )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._tmp is not None:
            self._tmp.cleanup()
        self._pool = self._tmp = None

    def best_paths(
        self,
        logps: Sequence[np.ndarray],
        log_prior: np.ndarray,
        opts: DecodeOptions,
        label: str = "decode",
    ) -> list[Hypothesis]:
        """Each utterance's best path at ``opts.acoustic_scale`` (which must be set)."""
        if opts.acoustic_scale is None:
            raise ValueError("best_paths needs an acoustic scale")
        chunks = [
            list(logps[i : i + TASK_UTTERANCES]) for i in range(0, len(logps), TASK_UTTERANCES)
        ]
        out: list[Hypothesis] = []
        with progress_bar(label, len(logps), enabled=self.progress, unit="utts") as advance:
            if self._pool is None or len(chunks) == 1:  # one task: no worker to start
                for chunk in chunks:
                    out += _best_paths(self.fst, chunk, log_prior, opts)
                    advance(len(chunk))
                return out
            futures: list[Future[list[Hypothesis]]] = [
                self._pool.submit(_task, chunk, log_prior, opts) for chunk in chunks
            ]
            for future, chunk in zip(futures, chunks, strict=True):
                out += future.result()
                advance(len(chunk))
        return out
