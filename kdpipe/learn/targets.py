"""Sparse teacher targets as padded arrays, aligned to a student's output frames.

The store gives ``SparseRows`` (fixed, variable or dense layout, values possibly uint8
codes); the KD losses take padded (N, K) class indices and log-probs with -inf in empty
slots (``pad_rows``). ``teacher_rows`` maps a student's output frames to teacher rows when
the two subsample differently. Legend: N rows, K kept entries per row (at most), C classes,
T' student output frames, R teacher rows of an utterance.
"""

from __future__ import annotations

import numpy as np

from kdpipe.errors import FingerprintMismatch
from kdpipe.sparse import SparseRows


def pad_rows(rows: SparseRows) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(idx (N, K) int64, logp (N, K) float32 with -inf in empty slots, tail (N,) float32).

    Fixed and dense layouts keep their width; the variable layout pads each row to the
    widest row (empty slots get class 0 and log-prob -inf, which the losses ignore).
    """
    logp = rows.logprobs()  # same shape as values
    tail = rows.tail_logprob().astype(np.float32)  # (N,)
    n = rows.num_rows
    if rows.layout == "dense":
        # a fresh array: a broadcast view of one row would be read-only (torch warns)
        idx = np.tile(np.arange(rows.num_classes, dtype=np.int64), (logp.shape[0], 1))
        return idx, logp.astype(np.float32), tail
    assert rows.indices is not None
    if rows.layout == "fixed":
        return rows.indices.astype(np.int64), logp.astype(np.float32), tail
    assert rows.offsets is not None  # the variable layout
    widths = rows.widths()  # (N,)
    k = max(1, int(widths.max()) if n else 1)
    idx = np.zeros((n, k), dtype=np.int64)
    out = np.full((n, k), -np.inf, dtype=np.float32)
    row = rows.row_ids()  # (nnz,) row of each kept entry
    col = np.arange(len(row)) - np.repeat(rows.offsets[:-1], widths)  # position in its row
    idx[row, col] = rows.indices
    out[row, col] = logp
    return idx, out, tail


def teacher_rows(out_frames: int, student_sub: int, teacher_sub: int) -> np.ndarray:
    """(T',) teacher row of each student output frame.

    Student output frame j sees input frame j * s_student (the protocol's alignment); the
    teacher row covering input frame f is f // s_teacher. So the rule is
    row(j) = (j * s_student) // s_teacher: every (s_s / s_t)-th row when the student
    subsamples more, each row repeated when it subsamples less, the identity when equal.
    Rows past the end are clipped by the caller.
    """
    return (np.arange(out_frames, dtype=np.int64) * student_sub) // teacher_sub


def check_rates(student_sub: int, teacher_sub: int, where: str) -> None:
    """Refuse subsampling factors that do not nest (neither divides the other)."""
    student, teacher = int(student_sub), int(teacher_sub)
    if student % teacher and teacher % student:
        raise FingerprintMismatch(
            f"{where}: the student subsamples by {student}, the teacher by {teacher}; targets "
            "can only be converted when one factor divides the other (pick a student "
            f"subsampling of {teacher} or a multiple or divisor of it)"
        )
