"""``TargetBlock``: the targets of a run of whole utterances, as the reader returns them.

Shapes: U utterances, R = sum of their frames. Frame-level arrays have R rows, utterance
rows of the utterance ``i`` are ``frame_offsets[i]:frame_offsets[i + 1]``; utterance-level
arrays have U rows. Values are uint8 codes or float16 as the store's encoding says (row deltas
already undone; see ``SparseRows.logprobs`` to get log-probabilities).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from kdpipe.sparse import SparseRows


@dataclass(frozen=True, eq=False)
class TargetBlock:
    """Targets of U whole utterances; see the module docstring."""

    ids: tuple[str, ...]  # (U,)
    frame_offsets: np.ndarray  # (U+1,) int64, starts at 0
    subsampling: np.ndarray  # (U,) uint16 teacher output frames per input frame
    frame_shift_ms: np.ndarray  # (U,) float32 teacher output frame shift
    input_window: np.ndarray  # (U, 2) int64 [start, stop) input frames; stop -1 = to the end
    frame: SparseRows | None = None  # R rows
    utt: SparseRows | None = None  # U rows
    hard_frame: np.ndarray | None = None  # (R,) hard labels; the dtype's max = no label
    hard_utt: np.ndarray | None = None  # (U,)
    members_frame: tuple[SparseRows, ...] = ()  # per ensemble member, R rows each
    members_utt: tuple[SparseRows, ...] = ()  # per ensemble member, U rows each

    @property
    def num_utterances(self) -> int:
        return len(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def num_frames(self) -> int:
        """R: frame-level rows in the block."""
        return int(self.frame_offsets[-1])

    def frames_per_utterance(self) -> np.ndarray:
        """(U,) int64 frames of each utterance."""
        return np.diff(self.frame_offsets)

    def utterance_of_frame(self) -> np.ndarray:
        """(R,) int64 position (in the block) of the utterance of each frame."""
        return np.repeat(np.arange(len(self.ids)), self.frames_per_utterance())

    def take(self, positions: Sequence[int] | np.ndarray) -> TargetBlock:
        """The utterances at ``positions`` (in that order) as a new block."""
        pos = np.asarray(positions, dtype=np.int64).reshape(-1)
        off = self.frame_offsets
        starts, stops = off[pos], off[pos + 1]
        new_off = np.zeros(len(pos) + 1, dtype=np.int64)
        np.cumsum(stops - starts, out=new_off[1:])
        contiguous = len(pos) > 0 and bool((pos[1:] == pos[:-1] + 1).all())

        def rows_f(r: SparseRows | None) -> SparseRows | None:
            if r is None:
                return None
            if contiguous or not len(pos):
                a = int(starts[0]) if len(pos) else 0
                return r.slice_rows(a, int(stops[-1]) if len(pos) else 0)
            return SparseRows.concat(
                [r.slice_rows(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]
            )

        def rows_u(r: SparseRows | None) -> SparseRows | None:
            if r is None:
                return None
            if contiguous or not len(pos):
                a = int(pos[0]) if len(pos) else 0
                return r.slice_rows(a, a + len(pos))
            return SparseRows.concat([r.slice_rows(int(i), int(i) + 1) for i in pos])

        def vec_f(x: np.ndarray | None) -> np.ndarray | None:
            if x is None:
                return None
            if not len(pos):
                return x[:0]
            return np.concatenate([x[a:b] for a, b in zip(starts, stops, strict=True)])

        return TargetBlock(
            ids=tuple(self.ids[i] for i in pos),
            frame_offsets=new_off,
            subsampling=self.subsampling[pos],
            frame_shift_ms=self.frame_shift_ms[pos],
            input_window=self.input_window[pos],
            frame=rows_f(self.frame),
            utt=rows_u(self.utt),
            hard_frame=vec_f(self.hard_frame),
            hard_utt=None if self.hard_utt is None else self.hard_utt[pos],
            members_frame=tuple(rows_f(m) for m in self.members_frame),  # type: ignore[misc]
            members_utt=tuple(rows_u(m) for m in self.members_utt),  # type: ignore[misc]
        )

    def utterance(self, i: int) -> TargetBlock:
        """The i-th utterance of the block alone."""
        return self.take([i])

    @classmethod
    def concat(cls, blocks: Sequence[TargetBlock]) -> TargetBlock:
        """Join blocks (same store) into one, in order."""
        if len(blocks) == 1:
            return blocks[0]
        off = np.zeros(sum(len(b) for b in blocks) + 1, dtype=np.int64)
        np.cumsum(np.concatenate([b.frames_per_utterance() for b in blocks]), out=off[1:])
        kw: dict = {"ids": tuple(i for b in blocks for i in b.ids), "frame_offsets": off}
        for f in fields(cls):
            if f.name in kw:
                continue
            vals = [getattr(b, f.name) for b in blocks]
            if f.name.startswith("members_"):
                kw[f.name] = tuple(SparseRows.concat(list(ms)) for ms in zip(*vals, strict=True))
            elif vals[0] is None:
                kw[f.name] = None
            elif isinstance(vals[0], SparseRows):
                kw[f.name] = SparseRows.concat(vals)
            else:
                kw[f.name] = np.concatenate(vals)
        return cls(**kw)
