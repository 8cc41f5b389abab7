"""Bad input: readers fail clearly instead of returning wrong numbers; verify names the
utterance and array."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from kdpipe.errors import LabelSetError, StoreFormatError, StoreIntegrityError
from kdpipe.store import arrayio, spec
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import damage_file, random_utterances, small_meta, write_store


def _read_all(path, **kw):
    r = StoreReader(path, **kw)
    return [b for b in r.blocks(members=True)]


def _first_part(path) -> str:
    return StoreReader(path).parts[0].id


def _rewrite(path, part: str, array: str, fn, fix_record: bool = True) -> None:
    """Change a stored array with zarr (valid chunks), optionally fixing its checksum so
    only the content checks can notice."""
    g = zarr.open_group(path / "parts" / part, mode="r+")
    data = g[array][...]
    new = fn(data.copy())
    with zarr.config.set({"array.write_empty_chunks": True}):  # as the format: every chunk
        g[array][...] = new
    if fix_record:
        rec = dict(g.attrs[spec.PART_ATTR])
        rec["arrays"][array]["sha256"] = arrayio.sha256(new)
        g.update_attributes({spec.PART_ATTR: rec})


def _chunk(path, part, array, index="0/0"):
    return path / "parts" / part / array / "c" / index


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty"])
def test_a_damaged_chunk_is_caught_by_reader_and_verify(store_path, damage):
    part = _first_part(store_path)
    damage_file(_chunk(store_path, part, "frame/indices"), damage)
    with pytest.raises(StoreIntegrityError, match=f"part {part}: array frame/indices"):
        _read_all(store_path)
    rep = verify_store(store_path)
    assert not rep.ok
    assert any(f"part {part}: array frame/indices" in e for e in rep.errors), rep.errors


def test_a_missing_chunk_is_caught(store_path):
    part = _first_part(store_path)
    _chunk(store_path, part, "frame/tail", "1").unlink()
    with pytest.raises(StoreIntegrityError, match=r"array frame/tail: chunk .* is missing"):
        _read_all(store_path)
    assert any("frame/tail" in e and "missing" in e for e in verify_store(store_path).errors)


def test_rewritten_chunks_are_caught_by_the_checksum(store_path):
    part = _first_part(store_path)
    _rewrite(store_path, part, "frame/values", lambda v: np.maximum(v, 2) - 1, fix_record=False)
    rep = verify_store(store_path)
    assert any(f"part {part}: array frame/values: sha256 differs" in e for e in rep.errors)


def test_class_indices_out_of_range_name_the_utterance(store_path):
    r = StoreReader(store_path)
    part = r.parts[0].id
    u = r._part_ids[0][2]
    row = int(r._frame_offsets[0][2])
    assert r.num_frames[2] > 0

    def bad(ix):
        ix[row, 1] = 40  # 40 classes: 0..39
        return ix

    _rewrite(store_path, part, "frame/indices", bad)
    with pytest.raises(StoreIntegrityError, match=f"utterance {u}: array frame/indices: class"):
        _read_all(store_path)
    rep = verify_store(store_path)
    assert any(f"utterance {u}: array frame/indices: class index 40" in e for e in rep.errors)


def test_values_that_do_not_sum_to_one_name_the_utterance(store_path):
    r = StoreReader(store_path)
    part, u = r.parts[0].id, r._part_ids[0][0]
    # stored row deltas 0: every code is 255, all p = 1
    _rewrite(store_path, part, "utt/values", lambda v: np.zeros_like(v))
    rep = verify_store(store_path)
    assert any(f"utterance {u}: array utt/values: kept mass + tail" in e for e in rep.errors)


def test_quality_out_of_range_names_the_utterance(store_path):
    r = StoreReader(store_path)
    part, u = r.parts[0].id, r._part_ids[0][1]
    assert verify_store(store_path).ok

    def bad(agreement):
        agreement[1] = 1.5  # a fraction of frames
        return agreement

    _rewrite(store_path, part, "index/quality/agreement", bad)
    rep = verify_store(store_path)
    assert any(f"utterance {u}: quality agreement 1.5 outside" in e for e in rep.errors)


def test_a_part_without_its_commit_record_is_invisible(store_path):
    """An interrupted writer's part (no commit record, not in the commit log) is ignored;
    a committed part that lost its record is an error (the commit log names it)."""
    r = StoreReader(store_path)
    part, n = r.parts[-1].id, len(r)
    meta_file = store_path / "parts" / part / "zarr.json"
    doc = json.loads(meta_file.read_text())
    del doc["attributes"][spec.PART_ATTR]
    meta_file.write_text(json.dumps(doc))
    with pytest.raises(StoreIntegrityError, match="committed part"):
        StoreReader(store_path)
    assert any("lost its record" in e for e in verify_store(store_path).errors)
    shutil.rmtree(store_path / spec.COMMITS / part)  # as if never committed
    r = StoreReader(store_path)
    assert part in r.uncommitted and len(r) < n
    rep = verify_store(store_path)
    assert rep.ok and any(part in w for w in rep.warnings)


def test_a_newer_format_version_is_refused(store_path):
    f = store_path / "zarr.json"
    doc = json.loads(f.read_text())
    doc["attributes"][spec.ROOT_ATTR]["version"] = 4
    f.write_text(json.dumps(doc))
    with pytest.raises(StoreFormatError, match=r"format version 4 .*reads versions 1, 2, 3 only"):
        StoreReader(store_path)
    assert "version 4" in verify_store(store_path).errors[0]


def test_not_a_store(tmp_path):
    zarr.open_group(tmp_path / "g.zarr", mode="w")
    with pytest.raises(StoreFormatError, match="not a kdpipe target store"):
        StoreReader(tmp_path / "g.zarr")
    with pytest.raises(Exception, match="store not found"):
        StoreReader(tmp_path / "nothing.zarr")


def test_a_label_set_that_disagrees_is_refused(store_path):
    student = [f"c{i}" for i in range(40)]
    StoreReader(store_path, labels=student)  # the same: fine
    student[3] = "x"
    with pytest.raises(LabelSetError, match="label 3 is 'c3' vs 'x'"):
        StoreReader(store_path, labels=student)
    assert "label 3" in verify_store(store_path, labels=student).errors[0]


def test_a_part_of_other_metadata_is_refused(store_path):
    part = _first_part(store_path)
    g = zarr.open_group(store_path / "parts" / part, mode="r+")
    rec = dict(g.attrs[spec.PART_ATTR], fingerprint="0" * 16)
    g.update_attributes({spec.PART_ATTR: rec})
    with pytest.raises(StoreIntegrityError, match="written for other store metadata"):
        StoreReader(store_path)
    assert any("other store metadata" in e for e in verify_store(store_path).errors)


def test_duplicates_and_corpus_coverage(tmp_path, meta):
    utts = random_utterances(meta, 4, seed=2)
    path = tmp_path / "s.zarr"
    w1, w2 = StoreWriter(path, meta), StoreWriter(path, meta)  # two writers, same time
    for k, (u, kw) in enumerate(utts.items()):
        if k < 3:
            w1.add(u, **kw)
        if k >= 2:
            w2.add(u, **kw)  # repeats one utterance of w1: dropped at w2's commit
    w1.close()
    w2.close()
    assert w2.dropped_at_commit == 1 and len(StoreReader(path)) == 4
    dup = next(iter(utts))
    (part,) = w1.parts_written  # a second copy of w1's part, as an older kdpipe could leave
    shutil.copytree(path / "parts" / part, path / "parts" / f"{part}x")
    doc = json.loads((path / "parts" / f"{part}x" / "zarr.json").read_text())
    doc["attributes"][spec.PART_ATTR]["part"] = f"{part}x"
    (path / "parts" / f"{part}x" / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(StoreIntegrityError, match=f"utterance {dup} is in parts"):
        StoreReader(path)
    r = StoreReader(path, allow_duplicates=True)
    assert sorted(r.ids) == sorted(utts) and sum(len(b) for b in r.blocks()) == 4
    corpus = [*list(utts)[1:], "never-written"]
    rep = verify_store(path, corpus_ids=corpus)
    text = "\n".join(rep.errors)
    assert f"utterance {dup} is in parts" in text
    assert "1 corpus utterance(s) missing from the store, e.g. never-written" in text
    assert f"1 utterance(s) not in the corpus, e.g. {next(iter(utts))}" in text


def test_frame_counts_are_checked_against_the_corpus(tmp_path, meta):
    utts = random_utterances(meta, 3, seed=4)
    write_store(tmp_path / "s.zarr", meta, utts)
    ids = list(utts)
    frames = [utts[u]["frame"].num_rows for u in ids]
    assert verify_store(tmp_path / "s.zarr", corpus_ids=ids, corpus_frames=frames).ok
    frames[1] += 1
    rep = verify_store(tmp_path / "s.zarr", corpus_ids=ids, corpus_frames=frames)
    assert [e for e in rep.errors if f"utterance {ids[1]}: {frames[1] - 1} target frames" in e]
    other = small_meta(corpus_fingerprint="abc")
    write_store(tmp_path / "f.zarr", other, random_utterances(other, 1))
    rep = verify_store(tmp_path / "f.zarr", corpus_fingerprint="xyz")
    assert "not from the given corpus (xyz)" in rep.errors[0]


def test_blocks_read_ahead_in_order_and_fail_at_the_damaged_block(store_path):
    """The stream reads one block ahead in a thread: blocks still come in store order, a
    damaged later part fails only when its block is due, and a stream left early stops."""
    r = StoreReader(store_path)
    want = [b.ids for b in r.blocks(frames=1)]  # one utterance a block, 3 parts
    last = r.parts[-1].id
    f = _chunk(store_path, last, "frame/values")
    f.write_bytes(f.read_bytes()[:-8])
    got = []
    with pytest.raises(StoreIntegrityError, match=f"part {last}: array frame/values"):
        for block in StoreReader(store_path).blocks(frames=1):
            got.append(block.ids)
    first_bad = next(k for k, ids in enumerate(want) if r._where[ids[0]][0] == len(r.parts) - 1)
    assert got == want[:first_bad] and first_bad > 0
    stream = StoreReader(store_path).blocks(frames=1)
    assert next(stream).ids == want[0]
    stream.close()  # the read-ahead of block 2 is dropped, nothing hangs
