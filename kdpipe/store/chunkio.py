"""Row-range reads of a target store's arrays: chunks fetched concurrently, CRC-checked and
decoded in threads.

The reader itself is shared with the feature store and lives in ``kdpipe.chunks`` (its
docstring has the layout and the speeds); this module keeps the names the store code
uses, and ties the chain that reader recognises to the one the writer encodes with
(``coding.CODEC_CHAIN``, the representation's one definition).
"""

from __future__ import annotations

from kdpipe.chunks import CHECKED_CHAIN as _CHECKED
from kdpipe.chunks import THREADS, ChunkedArray, ChunkError, Post, pool, read_rows
from kdpipe.store.coding import CODEC_CHAIN

__all__ = ["THREADS", "ChunkError", "ChunkedArray", "Post", "pool", "read_rows"]

if CODEC_CHAIN != _CHECKED:  # pragma: no cover - a kdpipe bug, caught by any import
    raise ImportError(f"store codecs {CODEC_CHAIN} are not the checked chain {_CHECKED}")
