"""``SparseRows``: R rows of sparse log-posteriors over C classes, in memory.

The same type carries what a selection rule returns (float32 log-probs) and what the store
reader gives back (values as stored: uint8 codes into a codebook, or float16). Three layouts:

- ``fixed``: ``indices`` (R, k), ``values`` (R, k); each row keeps k classes;
- ``variable``: CSR, ``indices`` (nnz,), ``values`` (nnz,), ``offsets`` (R+1,) int64;
- ``dense``: ``values`` (R, C), no ``indices`` (column j is class j).

In sparse layouts the entries of a row are in descending probability order (entry 0 is the
row's top-1). ``tail`` (R,) is the log of the probability mass not kept (-inf for none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np

Layout = Literal["fixed", "variable", "dense"]


@dataclass(frozen=True, eq=False)
class SparseRows:
    """Sparse log-posterior rows; see the module docstring for the layouts."""

    values: np.ndarray  # (R, k) | (nnz,) | (R, C): log-probs, or uint8 codes into codebook
    tail: np.ndarray  # (R,) log of the mass not kept, same encoding as values
    num_classes: int
    indices: np.ndarray | None = None  # (R, k) | (nnz,) class indices; None when dense
    offsets: np.ndarray | None = None  # (R+1,) int64 row starts; variable layout only
    codebook: np.ndarray | None = None  # (256,) float32 log-probs when values are codes

    @property
    def layout(self) -> Layout:
        if self.indices is None:
            return "dense"
        return "variable" if self.offsets is not None else "fixed"

    @property
    def num_rows(self) -> int:
        return len(self.tail)

    def __len__(self) -> int:
        return self.num_rows

    @property
    def width(self) -> int | None:
        """k for the fixed layout, C for dense, None for variable width."""
        if self.layout == "variable":
            return None
        return int(self.values.shape[1])

    def widths(self) -> np.ndarray:
        """(R,) int64 number of kept entries per row."""
        if self.offsets is not None:
            return np.diff(self.offsets)
        return np.full(self.num_rows, self.values.shape[1], dtype=np.int64)

    def _decode(self, x: np.ndarray) -> np.ndarray:
        if self.codebook is not None:
            return self.codebook[x]
        return x.astype(np.float32, copy=False)

    def logprobs(self) -> np.ndarray:
        """Kept log-probabilities as float32, same shape as ``values``."""
        return self._decode(self.values)

    def tail_logprob(self) -> np.ndarray:
        """(R,) float32 log of the mass not kept."""
        return self._decode(self.tail)

    def tail_mass(self) -> np.ndarray:
        """(R,) float32 probability mass not kept."""
        return np.exp(self.tail_logprob())

    def row_ids(self) -> np.ndarray:
        """(nnz,) row of each entry (variable layout) or (R, k) for fixed/dense."""
        if self.offsets is not None:
            return np.repeat(np.arange(self.num_rows), self.widths())
        return np.broadcast_to(np.arange(self.num_rows)[:, None], self.values.shape)

    def class_ids(self) -> np.ndarray:
        """Class of each entry, same shape as ``values``."""
        if self.indices is None:
            return np.broadcast_to(np.arange(self.num_classes), self.values.shape)
        return self.indices

    def densify(self, spread_tail: bool = False) -> np.ndarray:
        """(R, C) float32 probabilities; the tail is dropped or spread evenly over the
        classes not kept."""
        r = self.num_rows
        out = np.zeros((r, self.num_classes), dtype=np.float32)  # (R, C)
        p = np.exp(self.logprobs())
        if self.indices is None:
            out[:] = p
        else:
            out[self.row_ids().ravel(), self.indices.ravel().astype(np.int64)] = p.ravel()
        if spread_tail:
            rest = self.num_classes - self.widths()
            share = np.where(rest > 0, self.tail_mass() / np.maximum(rest, 1), 0.0)
            kept = np.zeros((r, self.num_classes), dtype=bool)
            if self.indices is None:
                kept[:] = True
            else:
                kept[self.row_ids().ravel(), self.indices.ravel().astype(np.int64)] = True
            out += np.where(kept, 0.0, share[:, None]).astype(np.float32)
        return out

    def top1(self) -> np.ndarray:
        """(R,) int64 class of the most probable kept entry of each row (-1 for empty)."""
        if self.indices is None:
            return self.values.argmax(axis=1).astype(np.int64)
        if self.offsets is None:
            return self.indices[:, 0].astype(np.int64)
        first = self.offsets[:-1]
        out = np.full(self.num_rows, -1, dtype=np.int64)
        nonempty = self.offsets[1:] > first
        out[nonempty] = self.indices[first[nonempty]]
        return out

    def slice_rows(self, start: int, stop: int) -> SparseRows:
        """Rows [start, stop) as a new ``SparseRows`` (views where possible)."""
        if self.offsets is None:
            idx = None if self.indices is None else self.indices[start:stop]
            return replace(
                self, values=self.values[start:stop], tail=self.tail[start:stop], indices=idx
            )
        a, b = int(self.offsets[start]), int(self.offsets[stop])
        assert self.indices is not None
        return replace(
            self,
            values=self.values[a:b],
            tail=self.tail[start:stop],
            indices=self.indices[a:b],
            offsets=self.offsets[start : stop + 1] - a,
        )

    def row(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(classes, log-probs) of row ``i``, float32 log-probs."""
        one = self.slice_rows(i, i + 1)
        return one.class_ids().reshape(-1), one.logprobs().reshape(-1)

    @classmethod
    def concat(cls, parts: Sequence[SparseRows]) -> SparseRows:
        """Stack rows of several blocks of the same layout and encoding."""
        if not parts:
            raise ValueError("SparseRows.concat needs at least one block")
        first = parts[0]
        if len(parts) == 1:
            return first
        values = np.concatenate([p.values for p in parts])
        tail = np.concatenate([p.tail for p in parts])
        indices = None if first.indices is None else np.concatenate([p.indices for p in parts])
        offsets = None
        if first.offsets is not None:
            widths = np.concatenate([p.widths() for p in parts])
            offsets = np.zeros(len(widths) + 1, dtype=np.int64)
            np.cumsum(widths, out=offsets[1:])
        return replace(first, values=values, tail=tail, indices=indices, offsets=offsets)

    def equals(self, other: SparseRows) -> bool:
        """Exact equality of layout, dtypes and every stored number."""

        def same(a: np.ndarray | None, b: np.ndarray | None) -> bool:
            if a is None or b is None:
                return a is None and b is None
            return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, True)

        return (
            self.num_classes == other.num_classes
            and same(self.values, other.values)
            and same(self.tail, other.tail)
            and same(self.indices, other.indices)
            and same(self.offsets, other.offsets)
            and same(self.codebook, other.codebook)
        )
