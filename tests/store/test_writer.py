"""Writers: parts commit atomically, interrupted writers leave readable stores, restarts
skip what is committed, concurrent writers need no coordination."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from kdpipe.errors import (
    ConfigError,
    FingerprintMismatch,
    LabelSetError,
    StoreError,
)
from kdpipe.essence import Rule, topk
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import random_utterances, small_meta, write_store

# A writer process that dies (SIGKILL, no cleanup) right before its 2nd commit record:
# the 2nd part's arrays are all on disk, its commit record is not.
KILLED_WRITER = textwrap.dedent("""
    import os, signal
    from kdpipe.testing.stores import random_utterances, small_meta
    from kdpipe.store.writer import StoreWriter
    meta = small_meta()
    utts = random_utterances(meta, 12, seed=3)
    commits = 0
    class Dying(StoreWriter):
        def _commit(self, key, group_json):
            global commits
            commits += 1
            if commits == {die_at}:
                os.kill(os.getpid(), signal.SIGKILL)
            super()._commit(key, group_json)
    with Dying({path!r}, meta, part_frames=40, shard={shard!r}) as w:
        for u, kw in utts.items():
            w.add(u, **kw)
""")


def _run_writer(path, die_at, shard="w"):
    code = KILLED_WRITER.format(path=str(path), die_at=die_at, shard=shard)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_killed_writer_leaves_a_readable_store_and_a_restart_completes_it(tmp_path):
    path = tmp_path / "s.zarr"
    proc = _run_writer(path, die_at=2)
    assert proc.returncode == -9, proc.stderr
    r = StoreReader(path)
    assert len(r.parts) == 1 and len(r.uncommitted) == 1  # 2nd part: arrays, no commit
    first = set(r.ids)
    assert 0 < len(first) < 12
    for block in r.blocks():
        assert block.frame.num_rows == block.num_frames
    rep = verify_store(path)
    assert rep.ok and any("no commit record" in w for w in rep.warnings)
    # the restarted writer skips what is committed and writes the rest
    meta, utts = small_meta(), random_utterances(small_meta(), 12, seed=3)
    with StoreWriter(path, meta, part_frames=40) as w:
        assert w.committed == first
        added = [u for u, kw in utts.items() if w.add(u, **kw)]
    assert set(added) == set(utts) - first
    r = StoreReader(path)
    assert sorted(r.ids) == sorted(utts)
    rep = verify_store(path, corpus_ids=list(utts))
    assert rep.ok, rep.errors


def test_concurrent_writers_share_a_store_without_coordination(tmp_path):
    path = tmp_path / "s.zarr"
    code = textwrap.dedent(f"""
        import sys
        from kdpipe.testing.stores import random_utterances, small_meta
        from kdpipe.store.writer import StoreWriter
        meta = small_meta()
        utts = random_utterances(meta, 20, seed=int(sys.argv[1]))
        with StoreWriter({str(path)!r}, meta, part_frames=50) as w:
            for u, kw in utts.items():
                w.add(u, **kw)
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(s)]) for s in (10, 11)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    r = StoreReader(path)
    want = list(random_utterances(small_meta(), 20, seed=10)) + list(
        random_utterances(small_meta(), 20, seed=11)
    )
    assert sorted(r.ids) == sorted(want)
    assert verify_store(path, corpus_ids=want).ok


def test_other_metadata_is_refused_unless_overwritten(tmp_path, meta):
    path = tmp_path / "s.zarr"
    write_store(path, meta, random_utterances(meta, 2))
    other = small_meta(rule=Rule("topk", {"k": 3}))
    with pytest.raises(FingerprintMismatch, match="differs in: rule"):
        StoreWriter(path, other)
    write_store(path, other, random_utterances(other, 1, seed=7), overwrite=True)
    assert StoreReader(path).meta == other and len(StoreReader(path)) == 1


def test_add_checks_its_input(tmp_path, meta):
    utts = random_utterances(meta, 2)
    u, kw = next(iter(utts.items()))
    with StoreWriter(tmp_path / "s.zarr", meta) as w:
        w.add(u, **kw)
        with pytest.raises(StoreError, match="added twice"):
            w.add(u, **kw)
        with pytest.raises(StoreError, match="whitespace"):
            w.add("a b", **kw)
        lp = np.log(np.full((3, 40), 1 / 40, dtype=np.float32))
        with pytest.raises(LabelSetError, match="41 classes"):
            w.add("x", frame=topk(np.log(np.full((3, 41), 1 / 41)), 4))
        with pytest.raises(StoreError, match="width 5"):
            w.add("x", frame=topk(lp, 5))
        bad = topk(lp, 4)
        bad.indices[1, 2] = 40
        with pytest.raises(StoreError, match="class index 40 out of range"):
            w.add("x", frame=bad)
        bad = topk(lp, 4)
        bad.values[0, 0] = np.nan
        with pytest.raises(StoreError, match="NaN"):
            w.add("x", frame=bad)
        with pytest.raises(StoreError, match="needs frame-level"):
            w.add("x")
    with pytest.raises(StoreError, match="hard label out of range"):
        m = small_meta(hard_labels=("frame",))
        StoreWriter(tmp_path / "h.zarr", m).add("x", frame=topk(lp, 4), hard_frame=[0, 1, 40])


def test_a_non_kdpipe_zarr_group_is_never_overwritten(tmp_path, meta):
    import zarr

    zarr.open_group(tmp_path / "other.zarr", mode="w").attrs["mine"] = 1
    with pytest.raises(ConfigError, match="holds a zarr store not made by kdpipe"):
        StoreWriter(tmp_path / "other.zarr", meta, overwrite=True)
    assert dict(zarr.open_group(tmp_path / "other.zarr").attrs) == {"mine": 1}
