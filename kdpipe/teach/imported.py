"""``import_posteriors``: teacher outputs someone already computed, into a target store.

``kdpipe store import SRC --out STORE --corpus FEATS --kind KIND``: the outputs of a teacher
run elsewhere (Kaldi ``nnet3-compute``, a NumPy or HDF5 dump; formats in
``kdpipe.store.interop.sources``) become a store that ``kdpipe learn`` streams like one
``kdpipe teach`` wrote: every selection rule and value encoding, hard labels from the
corpus, quality columns, resumable. Each utterance's rows go through
``PosteriorWriter``, the one path from (R, C) log-probs to stored targets that teach uses.
Legend: R rows of an utterance in the source, T its input frames in the corpus, s the
store's subsampling, C classes. Pure numpy (no torch).

Order of work: everything that can fail on the inputs is checked first, from the source's
index and the corpus, before any utterance is converted (docs/interop.md, "Import"):
the ids (every source id must be in the corpus; ``split`` keeps those in the split and
skips the others), the class counts, the frame counts (R must be within ``FRAME_TOLERANCE``
of ceil(T / s); the rows are then fitted to ceil(T / s), trimmed or padded with the last
row, as teach fits a member), the priors; then the source is hashed (its provenance) and
the store opened (``FingerprintMismatch`` for a store of other settings unless
``overwrite``). What only the data tells (NaN, a Posterior's class index) fails on the
utterance, naming it and its file; committed parts stay and a rerun resumes.

Threads: the calling thread reads the source (and the corpus' hard labels) ahead, a
bounded queue feeds ``threads`` workers that convert, select and measure (numpy releases
the GIL there), and the workers hand utterances to the store writer in the source's order
(``import_workers.InOrder``), so that the parts do not depend on the thread count.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from kdpipe import outputs
from kdpipe.console import progress_bar
from kdpipe.errors import KdpipeError
from kdpipe.essence import Rule
from kdpipe.store.writer import PART_FRAMES, StoreWriter
from kdpipe.teach.import_plan import ImportSummary, data_rows, make_plan
from kdpipe.teach.import_workers import Item, Workers, hard_labels_of


def import_posteriors(
    src: str | Path,
    corpus: str | Path,
    out: str | Path,
    *,
    kind: str,
    labels: str | Path | None = None,
    priors: str | Path | None = None,
    rule: Rule | None = None,
    values: str = "uint8",
    split: str | None = None,
    subsampling: int | None = None,
    format: str = "auto",
    overwrite: bool = False,
    part_frames: int | None = None,
    storage_options: dict[str, Any] | None = None,
    progress: bool = True,
    threads: int | None = None,
    seed: int = 0,
    hard_labels: bool = True,
) -> ImportSummary:
    """Import the teacher outputs ``src`` (of ``kind``: logits, log_probs, probs, loglik)
    for the utterances of the feature store ``corpus`` into the target store ``out``.

    ``labels``: the teacher's label file (default: the corpus' labels; hard labels are
    stored only when the two agree); ``priors``: Kaldi priors for ``loglik``; ``split``:
    import only the source utterances in this corpus split (the others are skipped and
    counted); ``subsampling``: the source's rows per input frame (default inferred);
    ``threads``: worker threads (default: the CPUs, at most 4). Resumable: a rerun skips
    committed utterances (reading nothing of them) and gives the same store; a store of
    other settings is refused unless ``overwrite``. See the module docstring.
    """
    started = time.perf_counter()
    outputs.claim_output(
        out, makes=outputs.TARGET_STORE, inputs=[src, corpus, labels, priors],
        overwrite=overwrite, storage_options=storage_options,
    )  # fmt: skip
    plan = make_plan(
        src, corpus, kind=kind, labels=labels, priors=priors, rule=rule or Rule(),
        values=values, split=split, subsampling=subsampling, format=format, seed=seed,
        hard_labels=hard_labels,
    )  # fmt: skip
    with plan.source as source:
        summary = ImportSummary(
            store=str(out), source=str(src), format=source.format, level=plan.level,
            subsampling=plan.subsampling,
            outside_split=plan.outside_split, not_in_source=plan.not_in_source,
            hash_seconds=plan.hash_seconds,
        )  # fmt: skip
        writer = StoreWriter(
            out, plan.meta, storage_options=storage_options, overwrite=overwrite,
            part_frames=part_frames or PART_FRAMES, shard="import",
        )  # fmt: skip
        done = writer.committed
        summary.before = len(done)
        todo = [(e, i) for e, i in plan.todo if e.utt_id not in done]
        summary.skipped = len(plan.todo) - len(todo)
        total = sum(e.rows or 0 for e, _ in todo)
        n = max(1, min(4, os.cpu_count() or 1)) if threads is None else max(1, threads)
        workers = Workers(plan, writer, summary, n, seed)
        try:
            with progress_bar("import", total, enabled=progress, unit="rows") as advance:
                for seq, (e, i) in enumerate(todo):
                    if workers.gate.failed:
                        break
                    try:
                        data = source.read(e)
                    except KdpipeError as error:
                        workers.gate.fail(seq, error)
                        break
                    frames = int(plan.corpus.num_frames[i])
                    workers.put(Item(seq, e, data, frames, hard_labels_of(plan, i)))
                    advance(e.rows or data_rows(data))
        except BaseException:
            workers.abort()
            writer.release()
            raise
        workers.finish()
        failure = workers.gate.first_error()
        if failure is not None:
            writer.release()
            raise failure  # the buffer is abandoned; committed parts stay (a rerun resumes)
        writer.close()
    summary.settle(writer.dropped_at_commit, writer.num_committed)  # counted as added
    summary.source_bytes = source.bytes_read
    summary.parts = list(writer.parts_written)
    summary.bytes = writer.bytes_written()
    summary.seconds = time.perf_counter() - started
    return summary
