"""Utterances' posteriors into a target store: the one path ``teach`` and ``store import``
share. Legend: R rows of an utterance (output frames, or 1 for a clip), C classes.

``PosteriorWriter.add`` takes an utterance's full (R, C) log-probabilities (and its
members', and its hard labels), applies the store's selection rule (``sample`` drawn from
a generator seeded by (seed, utterance id), so reruns and shards draw the same), measures
the teacher's quality on it (mean entropy, agreement with the hard labels: the
``index/quality`` columns of format 3) and adds it to a ``StoreWriter``. Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from kdpipe.seeds import utt_rng
from kdpipe.sparse import SparseRows
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter


@dataclass
class Added:
    """What one utterance added (for run summaries)."""

    rows: int
    entropy_sum: float  # nats, summed over rows
    tail_sum: float  # probability mass the rule dropped, summed over rows
    correct: int  # rows whose argmax equals the hard label
    counted: int  # rows with a hard label


@dataclass(kw_only=True)
class Totals:
    """What a run (teach, import) added, and the means a summary prints."""

    utterances: int = 0  # added by this run
    frames: int = 0  # target rows written (output frames, or clips)
    entropy_sum: float = 0.0  # nats of the full posterior, summed over rows
    tail_sum: float = 0.0  # mass the rule dropped, summed over rows
    correct: int = 0  # rows whose argmax is the hard label
    counted: int = 0  # rows with a hard label
    skipped: int = 0  # already committed (a resumed run), not recomputed
    before: int = 0  # utterances the store held when this run opened it (any writer's)
    dropped: int = 0  # computed, but another writer committed them first: not written
    total: int = 0  # utterances the store holds after this run (as its writer last saw it)
    bytes: int = 0  # bytes of the parts this run wrote
    seconds: float = 0.0
    parts: list[str] = field(default_factory=list)

    @property
    def bytes_per_frame(self) -> float:
        return self.bytes / max(self.frames, 1)

    @property
    def frames_per_second(self) -> float:
        return self.frames / max(self.seconds, 1e-9)

    def settle(self, dropped: int, total: int) -> None:
        """At the end of a run: ``dropped`` of the counted utterances were committed by
        another writer first (so not written by this one); the store now holds ``total``."""
        self.dropped, self.total = dropped, total
        self.utterances -= dropped

    def counts(self) -> dict[str, int]:
        """The utterance counts every run summary reports."""
        keys = ("utterances", "skipped", "dropped", "before", "total")
        return {key: getattr(self, key) for key in keys}

    def count(self, added: Added) -> None:
        self.utterances += 1
        self.frames += added.rows
        self.entropy_sum += added.entropy_sum
        self.tail_sum += added.tail_sum
        self.correct += added.correct
        self.counted += added.counted

    @property
    def mean_entropy(self) -> float:
        """Mean entropy (nats) of the teacher posterior per row, before the rule."""
        return self.entropy_sum / max(self.frames, 1)

    @property
    def mean_tail_mass(self) -> float:
        """Mean probability mass the rule dropped per row."""
        return self.tail_sum / max(self.frames, 1)

    @property
    def accuracy(self) -> float | None:
        """Top-1 agreement with the corpus' hard labels; None without labels."""
        return self.correct / self.counted if self.counted else None


def quality(logp: np.ndarray, hard: np.ndarray | int | None) -> tuple[Added, dict[str, float]]:
    """Entropy and agreement of (R, C) log-probs: the run statistics and the quality
    columns (``agreement`` NaN without hard labels)."""
    probs = np.exp(logp)  # (R, C), in logp's dtype: one pass, no float64 copy of the matrix
    with np.errstate(invalid="ignore"):  # 0 * -inf in rows with a probability 0
        plogp = np.einsum("rc,rc->r", probs, logp)  # (R,) sum_c p log p; NaN where -inf
        missing = np.isnan(plogp)  # those rows alone, masked
        if missing.any():
            rows = logp[missing]
            plogp[missing] = np.where(np.isneginf(rows), 0.0, probs[missing] * rows).sum(1)
    return quality_of(-plogp, logp.argmax(-1), hard)


def quality_of(
    entropy: np.ndarray, top: np.ndarray, hard: np.ndarray | int | None
) -> tuple[Added, dict[str, float]]:
    """``quality`` from each row's entropy (R,) and top-1 class (R,), however computed
    (here, or on the teacher's device: ``kdpipe.device_essence``)."""
    total = float(entropy.sum(dtype=np.float64))
    correct = counted = 0
    if hard is not None:
        labels = np.atleast_1d(np.asarray(hard))[: len(top)]  # (R,), -1: no label
        labelled = labels >= 0
        top = top[: len(labels)]  # (R,)
        correct = int((top[labelled] == labels[labelled]).sum())
        counted = int(labelled.sum())
    rows = len(entropy)
    columns = {
        "entropy": total / max(rows, 1),
        "agreement": correct / counted if counted else float("nan"),
    }
    return Added(rows, total, 0.0, correct, counted), columns


class Sink(Protocol):
    """Where ``PosteriorWriter`` adds utterances: a ``StoreWriter``, or anything that
    forwards to one (import's gate that keeps the source's order across threads)."""

    @property
    def meta(self) -> StoreMeta: ...

    def add(self, utt_id: str, **targets: Any) -> bool: ...


class PosteriorWriter:
    """Select, measure and add utterances to ``writer`` (its metadata says the rule, the
    level, the members and whether hard labels are stored)."""

    def __init__(self, writer: Sink | StoreWriter, seed: int = 0) -> None:
        self.writer, self.meta, self.seed = writer, writer.meta, seed
        self.level = self.meta.levels[0]  # teach and import write one level

    def add(
        self,
        utt_id: str,
        logp: np.ndarray,
        *,
        members: Sequence[np.ndarray] = (),
        hard: np.ndarray | int | None = None,
        window: tuple[int, int] = (0, -1),
    ) -> Added | None:
        """Add one utterance's (R, C) log-probs; None if the store already has it."""
        rule = self.meta.rule
        sample = rule.name == "sample"
        rng = utt_rng(self.seed, utt_id, "sample") if sample else None
        kept = rule.apply(logp, rng=rng)
        member_rows = [
            rule.apply(rows, rng=utt_rng(self.seed, utt_id, f"sample-{j}") if sample else None)
            for j, rows in enumerate(members)
        ]
        return self.add_selected(utt_id, kept, quality(logp, hard), members=member_rows,
                                 hard=hard, window=window)  # fmt: skip

    def add_selected(
        self,
        utt_id: str,
        kept: SparseRows,
        measured: tuple[Added, dict[str, float]],
        *,
        members: Sequence[SparseRows] = (),
        hard: np.ndarray | int | None = None,
        window: tuple[int, int] = (0, -1),
    ) -> Added | None:
        """Add one utterance whose rows the store's rule already kept (``add``, or top-k
        on the teacher's device), with its ``quality``; None if the store has it."""
        added, columns = measured
        targets: dict[str, Any] = {self.level: kept, f"members_{self.level}": list(members)}
        if self.level in self.meta.hard_labels:
            targets[f"hard_{self.level}"] = hard
        if not self.writer.add(utt_id, **targets, input_window=window, quality=columns):
            return None
        added.tail_sum = float(kept.tail_mass().sum())
        return added
