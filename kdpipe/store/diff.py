"""``diff_stores``: how much two stores' teachers agree, on the utterances they share.

Per level: rows compared, top-1 agreement, and the mean KL divergences KL(A||B) and
KL(B||A) between the stored distributions, each densified with its tail spread evenly over
the classes it did not keep and floored at ``FLOOR`` (so a class kept by one store and not
the other costs a finite amount). Utterances whose frame counts differ are counted, not
compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.sparse import SparseRows
from kdpipe.store.reader import StoreReader

FLOOR = 1e-8  # probability floor before the logs of the KL divergence
BATCH = 4096  # rows densified at a time: 4096 x C float32 (32 MB at C = 2000)


@dataclass
class LevelDiff:
    rows: int = 0
    top1_agree: int = 0
    kl_ab: float = 0.0  # sums; divided by rows for the means
    kl_ba: float = 0.0

    @property
    def top1_agreement(self) -> float | None:
        return self.top1_agree / self.rows if self.rows else None

    @property
    def mean_kl_ab(self) -> float | None:
        return self.kl_ab / self.rows if self.rows else None

    @property
    def mean_kl_ba(self) -> float | None:
        return self.kl_ba / self.rows if self.rows else None


@dataclass
class DiffReport:
    a: str
    b: str
    shared: int = 0
    only_a: int = 0
    only_b: int = 0
    frame_mismatches: list[str] = field(default_factory=list)
    levels: dict[str, LevelDiff] = field(default_factory=dict)


def _compare(ra: SparseRows, rb: SparseRows, acc: LevelDiff) -> None:
    acc.rows += ra.num_rows
    acc.top1_agree += int((ra.top1() == rb.top1()).sum())
    for s in range(0, ra.num_rows, BATCH):
        pa = np.maximum(ra.slice_rows(s, s + BATCH).densify(spread_tail=True), FLOOR)  # (B, C)
        pb = np.maximum(rb.slice_rows(s, s + BATCH).densify(spread_tail=True), FLOOR)
        pa /= pa.sum(axis=1, keepdims=True)
        pb /= pb.sum(axis=1, keepdims=True)
        la, lb = np.log(pa), np.log(pb)
        acc.kl_ab += float((pa * (la - lb)).sum())
        acc.kl_ba += float((pb * (lb - la)).sum())


def diff_stores(
    a: str | Path,
    b: str | Path,
    *,
    a_options: dict[str, Any] | None = None,
    b_options: dict[str, Any] | None = None,
    max_frames: int | None = None,
) -> DiffReport:
    """Compare the targets of stores ``a`` and ``b`` (same label set required)."""
    if max_frames is not None and max_frames < 1:
        raise ConfigError(f"max_frames must be >= 1, got {max_frames}")
    ra = StoreReader(a, storage_options=a_options)
    rb = StoreReader(b, storage_options=b_options)
    ra.check_labels(rb.label_set, f"store {b}")
    rep = DiffReport(str(a), str(b))
    shared_ids = [u for u in ra.ids if u in rb]
    rep.shared, rep.only_a = len(shared_ids), len(ra) - len(shared_ids)
    rep.only_b = len(rb) - len(shared_ids)
    levels = [lv for lv in ("frame", "utt") if lv in ra.meta.levels and lv in rb.meta.levels]
    rep.levels = {lv: LevelDiff() for lv in levels}
    seen = 0
    for block_a in ra.blocks():
        ids = [u for u in block_a.ids if u in rb]
        if not ids:
            continue
        pos = {u: k for k, u in enumerate(block_a.ids)}
        block_a = block_a.take([pos[u] for u in ids])
        block_b = rb.read(ids)
        same = block_a.frames_per_utterance() == block_b.frames_per_utterance()
        rep.frame_mismatches += [u for u, ok in zip(ids, same, strict=True) if not ok]
        if not same.all():
            keep = np.flatnonzero(same)
            block_a, block_b = block_a.take(keep), block_b.take(keep)
        for lv in levels:
            _compare(getattr(block_a, lv), getattr(block_b, lv), rep.levels[lv])
        seen += block_a.num_frames
        if max_frames is not None and seen >= max_frames:
            break
    return rep
