"""The worker threads of a ``store import``: a bounded queue of utterances read ahead by
the calling thread, ``threads`` workers that convert, select and measure (numpy releases
the GIL there), and ``InOrder``, which hands utterances to the store writer in the
source's order so that the parts do not depend on the thread count."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdpipe.corpus.views import labels_at_rate
from kdpipe.errors import CorpusError, LabelSetError
from kdpipe.store.interop.sources import Data, Entry, Posteriors
from kdpipe.store.posteriors import Added, PosteriorWriter
from kdpipe.store.writer import StoreWriter
from kdpipe.teach.import_plan import (
    ImportPlan,
    ImportSummary,
    check_frames,
    fit_rows,
    output_rows,
    to_logprobs,
)

QUEUE_UTTERANCES = 6  # read ahead of the workers


class Dropped(Exception):
    """An utterance after a failed one: not written."""


class InOrder:
    """The ``StoreWriter`` that ``PosteriorWriter`` sees from several worker threads: each
    ``add`` waits for its turn (``begin(seq)`` says which utterance a thread is on), so
    utterances reach the store in the source's order whatever the threads; after a failure
    at ``seq``, later utterances are dropped (``Dropped``), earlier ones still go in."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer, self.meta = writer, writer.meta
        self._cond = threading.Condition()
        self._next = 0
        self._local = threading.local()
        self.errors: dict[int, BaseException] = {}
        self.stop: float = float("inf")  # seq of the first failure

    def begin(self, seq: int) -> None:
        self._local.seq = seq

    def add(self, utt_id: str, **kw: Any) -> bool:
        seq = self._local.seq
        with self._cond:
            while self._next != seq:
                if seq > self.stop:
                    raise Dropped
                self._cond.wait()
            if seq > self.stop:
                raise Dropped
        try:
            return self.writer.add(utt_id, **kw)
        finally:
            with self._cond:
                self._next += 1
                self._cond.notify_all()

    def fail(self, seq: float, error: BaseException | None) -> None:
        with self._cond:
            if error is not None:
                self.errors[int(seq)] = error
            self.stop = min(self.stop, seq)
            self._cond.notify_all()

    @property
    def failed(self) -> bool:
        return self.stop != float("inf")

    def first_error(self) -> BaseException | None:
        return self.errors[min(self.errors)] if self.errors else None


@dataclass
class Item:
    seq: int
    entry: Entry
    data: Data
    frames: int  # T, input frames in the corpus
    hard: np.ndarray | int | None


class Workers:
    """Convert, fit, select and write utterances in ``threads`` threads (see ``InOrder``)."""

    def __init__(self, plan: ImportPlan, writer: StoreWriter, summary: ImportSummary, threads: int,
                 seed: int) -> None:  # fmt: skip
        self.plan, self.summary = plan, summary
        self.gate = InOrder(writer)
        # PosteriorWriter needs only ``meta`` and ``add`` of its writer
        self.posteriors = PosteriorWriter(self.gate, seed)
        self.queue: queue.Queue[Item | None] = queue.Queue(maxsize=QUEUE_UTTERANCES)
        self.lock = threading.Lock()
        self.threads = [
            threading.Thread(target=self._run, name=f"kdpipe-import-{k}", daemon=True)
            for k in range(threads)
        ]
        for t in self.threads:
            t.start()

    def put(self, item: Item) -> None:
        while not self.gate.failed:
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()

    def abort(self) -> None:
        """Stop at once (the reading thread failed or was interrupted)."""
        self.gate.fail(-1, None)
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass
        for _ in self.threads:
            try:
                self.queue.put_nowait(None)
            except queue.Full:
                break
        for t in self.threads:
            t.join(timeout=30)

    def _run(self) -> None:
        while (item := self.queue.get()) is not None:
            if item.seq > self.gate.stop:
                continue
            self.gate.begin(item.seq)
            try:
                added, fit = self._one(item)
            except Dropped:
                continue
            except BaseException as error:
                self.gate.fail(item.seq, error)
                continue
            with self.lock:
                s = self.summary
                s.count(added)
                s.trimmed += fit < 0
                s.padded += fit > 0

    def _one(self, item: Item) -> tuple[Added, int]:
        plan, e = self.plan, item.entry
        c = plan.meta.num_classes
        data = item.data
        x = data.dense(c, e.where) if isinstance(data, Posteriors) else data
        if x.shape[1] != c:
            raise LabelSetError(f"{e.where}: {x.shape[1]} classes; the label set has {c}")
        if plan.level == "utt":
            if len(x) != 1:
                raise CorpusError(f"{e.where}: {len(x)} rows; utterance-level targets need 1")
            want = 1
        else:
            check_frames(e, len(x), item.frames, plan.subsampling, plan.source.location)
            want = output_rows(item.frames, plan.subsampling)
        fit = want - len(x)
        logp = to_logprobs(fit_rows(x, want), plan.kind, e.where, plan.log_priors)  # (T', C)
        added = self.posteriors.add(e.utt_id, logp, hard=item.hard)
        if added is None:  # committed meanwhile by another writer
            raise Dropped
        return added, fit


def hard_labels_of(plan: ImportPlan, i: int) -> np.ndarray | int | None:
    """The corpus' hard labels at the store's rate: frame j*s (teach's rule), -1 past the
    labels; the clip label at utterance level; None without hard labels."""
    if plan.level not in plan.meta.hard_labels:
        return None
    corpus = plan.corpus
    if plan.level == "utt":
        assert corpus.clip_labels is not None
        return int(corpus.clip_labels[i])
    want = output_rows(int(corpus.num_frames[i]), plan.subsampling)
    return labels_at_rate(corpus.frame_labels(i), (0, -1), plan.subsampling, want)
