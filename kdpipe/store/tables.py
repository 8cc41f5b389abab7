"""Polars views of a store: one row per utterance, or one row per frame.

``row_stats`` gives the per-row numbers both views (and ``inspect``) use. Entropy is that of
the kept entries plus the tail taken as one more outcome: a lower bound of the teacher's
entropy, exact for the ``full`` rule.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import numpy as np

from kdpipe.sparse import SparseRows
from kdpipe.store.block import TargetBlock

if TYPE_CHECKING:
    import polars as pl

    from kdpipe.store.reader import StoreReader


def row_stats(rows: SparseRows) -> dict[str, np.ndarray]:
    """(R,) arrays: ``top1`` class, ``top1_prob``, ``tail`` mass, ``entropy`` (nats), ``kept``."""
    logp = rows.logprobs().astype(np.float64)
    p = np.exp(logp)
    plogp = np.where(p > 0, p * logp, 0.0)
    t = rows.tail_mass().astype(np.float64)
    tlogt = np.where(t > 0, t * np.log(np.where(t > 0, t, 1.0)), 0.0)
    if rows.offsets is None:
        h = -plogp.sum(axis=-1)
        top1_prob = p.max(axis=-1) if rows.indices is None else p[:, 0] if p.size else p[:, :0]
    else:
        rid = np.repeat(np.arange(rows.num_rows), rows.widths())
        h = -np.bincount(rid, plogp, rows.num_rows)
        top1_prob = np.zeros(rows.num_rows)
        nonempty = rows.widths() > 0
        top1_prob[nonempty] = p[rows.offsets[:-1][nonempty]]
    return {
        "top1": rows.top1(),
        "top1_prob": np.asarray(top1_prob, dtype=np.float32).reshape(-1),
        "tail": t.astype(np.float32),
        "entropy": (h - tlogt).astype(np.float32),
        "kept": rows.widths(),
    }


def _level(block: TargetBlock) -> tuple[SparseRows, np.ndarray | None, np.ndarray]:
    """The frame level where present (else the utterance level), its hard labels and the
    (rows,) utterance position of each row."""
    if block.frame is not None:
        return block.frame, block.hard_frame, block.utterance_of_frame()
    assert block.utt is not None
    return block.utt, block.hard_utt, np.arange(len(block))


def _blocks(
    reader: StoreReader, ids: Sequence[str] | None, max_frames: int | None
) -> Iterator[TargetBlock]:
    seen = 0
    if ids is not None:
        for i in range(0, len(ids), 4096):
            yield reader.read(list(ids[i : i + 4096]))
        return
    for block in reader.blocks():
        yield block
        seen += max(block.num_frames, len(block))
        if max_frames is not None and seen >= max_frames:
            return


def utterance_table(
    reader: StoreReader, ids: Sequence[str] | None = None, *, max_frames: int | None = None
) -> pl.DataFrame:
    """One row per utterance: ``id``, ``frames``, ``mean_entropy``, ``mean_tail``,
    ``top1_agreement`` (teacher top-1 == hard label, over labelled frames; null without
    hard labels) of the stored essence; frame-level stats where the store has them, else
    the clip target's. And the quality the teacher recorded (format 3, before the rule):
    ``teacher_entropy``, ``teacher_agreement`` (null where unknown)."""
    import polars as pl

    position = {utt_id: i for i, utt_id in enumerate(reader.ids)}
    frames = []
    for block in _blocks(reader, ids, max_frames):
        at = np.array([position[utt_id] for utt_id in block.ids], dtype=np.int64)
        rows, hard, utt = _level(block)
        st = row_stats(rows)
        n = np.bincount(utt, minlength=len(block)).astype(np.float64)
        mean = {
            k: np.bincount(utt, st[k], len(block)) / np.maximum(n, 1) for k in ("entropy", "tail")
        }
        agree = None
        if hard is not None:
            labelled = hard != np.iinfo(hard.dtype).max
            hits = np.bincount(utt, labelled & (st["top1"] == hard), len(block))
            cnt = np.bincount(utt, labelled, len(block))
            agree = np.where(cnt > 0, hits / np.maximum(cnt, 1), np.nan)
        frames.append(
            pl.DataFrame(
                {
                    "id": list(block.ids),
                    "frames": block.frames_per_utterance().astype(np.uint32),
                    "mean_entropy": mean["entropy"].astype(np.float32),
                    "mean_tail": mean["tail"].astype(np.float32),
                    "top1_agreement": pl.Series(agree, dtype=pl.Float32, nan_to_null=True)
                    if agree is not None
                    else pl.Series([None] * len(block), dtype=pl.Float32),
                    **{
                        f"teacher_{name}": pl.Series(
                            reader.quality[name][at], dtype=pl.Float32, nan_to_null=True
                        )
                        for name in ("entropy", "agreement")
                    },
                }
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "id": pl.String,
                "frames": pl.UInt32,
                "mean_entropy": pl.Float32,
                "mean_tail": pl.Float32,
                "top1_agreement": pl.Float32,
                "teacher_entropy": pl.Float32,
                "teacher_agreement": pl.Float32,
            }
        )
    return pl.concat(frames)


def frame_table(
    reader: StoreReader, ids: Sequence[str] | None = None, *, max_frames: int | None = None
) -> pl.DataFrame:
    """One row per frame (per clip for clip-level stores): ``id``, ``frame``, ``top1``,
    ``top1_prob``, ``tail``, ``entropy``, ``kept``, ``hard`` (null where unlabelled)."""
    import polars as pl

    out = []
    for block in _blocks(reader, ids, max_frames):
        rows, hard, utt = _level(block)
        st = row_stats(rows)
        start = block.frame_offsets[:-1] if block.frame is not None else np.arange(len(block))
        cols = {
            "id": pl.Series(list(block.ids), dtype=pl.String).gather(utt),
            "frame": (np.arange(rows.num_rows) - start[utt]).astype(np.uint32),
            "top1": st["top1"].astype(np.int32),
            "top1_prob": st["top1_prob"],
            "tail": st["tail"],
            "entropy": st["entropy"],
            "kept": st["kept"].astype(np.uint32),
        }
        if hard is not None:
            h = pl.Series(hard.astype(np.int32))
            cols["hard"] = h.set(pl.Series(hard == np.iinfo(hard.dtype).max), None)
        else:
            cols["hard"] = pl.Series([None] * rows.num_rows, dtype=pl.Int32)
        out.append(pl.DataFrame(cols))
    if not out:
        schema = {
            "id": pl.String,
            "frame": pl.UInt32,
            "top1": pl.Int32,
            "top1_prob": pl.Float32,
            "tail": pl.Float32,
            "entropy": pl.Float32,
            "kept": pl.UInt32,
            "hard": pl.Int32,
        }
        return pl.DataFrame(schema=schema)
    return pl.concat(out)
