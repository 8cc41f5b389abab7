"""Format 2: row-delta coded values (exact, fast to decode), version 1 stores still read, and
what a version-2 writer and reader refuse."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from kdpipe.errors import FingerprintMismatch, StoreError, StoreFormatError
from kdpipe.essence import Rule
from kdpipe.sparse import SparseRows
from kdpipe.store import arrayio, spec
from kdpipe.store.coding import delta_decode, delta_encode
from kdpipe.store.reader import StoreReader
from kdpipe.store.transfer import copy_store
from kdpipe.store.verify import verify_store
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import random_utterances, small_meta, write_store


def _descending(rng: np.random.Generator, shape) -> np.ndarray:
    return -np.sort(-rng.integers(0, 256, shape), axis=-1).astype(np.uint8)


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(0, 40), k=st.integers(1, 25), seed=st.integers(0, 999))
def test_row_delta_is_exact_for_any_width(rows, k, seed):
    rng = np.random.default_rng(seed)
    q = _descending(rng, (rows, k))
    q[::3, 0] = 255  # extremes: the sums reach 255 exactly
    q[::5] = 0
    d = delta_encode(q)
    assert d.shape == q.shape and d.dtype == np.uint8
    assert (d[:, 1:] <= q[:, :-1]).all()  # small non-negative steps
    np.testing.assert_array_equal(delta_decode(d), q)


@settings(max_examples=60, deadline=None)
@given(widths=st.lists(st.integers(0, 7), max_size=30), seed=st.integers(0, 999))
def test_row_delta_is_exact_for_csr_rows_with_empty_ones(widths, seed):
    rng = np.random.default_rng(seed)
    off = np.zeros(len(widths) + 1, dtype=np.int64)
    np.cumsum(widths, out=off[1:])
    q = np.concatenate([_descending(rng, (w,)) for w in widths] or [np.zeros(0, np.uint8)])
    np.testing.assert_array_equal(delta_decode(delta_encode(q, off), off), q)


def _to_format_1(path) -> None:
    """Rewrite a format 2 store as format 1 would have written it: plain codes, version 1
    root record (checksums fixed), so only the version tells the two apart."""
    root = zarr.open_group(path, mode="r+")
    rec = dict(root.attrs[spec.ROOT_ATTR])
    meta = spec.StoreMeta.from_dict(rec["meta"])
    for _, part in root["parts"].groups():
        commit = dict(part.attrs[spec.PART_ATTR])
        for p in [p for p in commit["arrays"] if p.startswith("index/quality/")]:
            del commit["arrays"][p]  # format 3's quality columns: not in format 1
        for p in commit["arrays"]:
            if p.endswith("values"):
                base = p.rsplit("/", 1)[0]
                off = part[base + "/row_offsets"][...] if base + "/row_offsets" in part else None
                codes = delta_decode(part[p][...], off)
                part[p][...] = codes
                commit["arrays"][p]["sha256"] = arrayio.sha256(codes)
        part.update_attributes({spec.PART_ATTR: commit})
    rec.update(version=1, encoding=json.loads(json.dumps(meta.encoding(1))))
    root.update_attributes({spec.ROOT_ATTR: rec})


@pytest.mark.parametrize("rule", [Rule("topk", {"k": 3}), Rule("threshold", {"p_min": 0.05})])
def test_a_format_1_store_reads_as_before_and_is_not_appended_to(tmp_path, rule):
    meta = small_meta(rule=rule, levels=("frame", "utt"), hard_labels=("frame",))
    utts = random_utterances(meta, 8, seed=5)
    new, old = tmp_path / "v2.zarr", tmp_path / "v1.zarr"
    write_store(new, meta, utts, part_frames=50, chunk_rows=16)
    write_store(old, meta, utts, part_frames=50, chunk_rows=16)
    _to_format_1(old)
    a, b = StoreReader(new), StoreReader(old)
    assert (b.record["version"], b.transform) == (1, "none") and a.transform == "row-delta"
    stored = zarr.open_group(new)[f"parts/{a.parts[0].id}/frame/values"][...]
    assert not np.array_equal(stored, a.read(a._part_ids[0]).frame.values)  # deltas on disk
    for x, y in zip(a.blocks(frames=7), b.blocks(frames=7), strict=True):
        assert x.ids == y.ids and x.frame.equals(y.frame) and x.utt.equals(y.utt)
    assert verify_store(old).ok and verify_store(new).ok
    assert np.isnan(b.quality["entropy"]).all() and len(b.quality["agreement"]) == len(b)
    with pytest.raises(StoreFormatError, match="format version 1; this kdpipe writes version 3"):
        StoreWriter(old, meta)
    copy_store(old, tmp_path / "copy.zarr", chunk_rows=5)  # stays format 1, still readable
    c = StoreReader(tmp_path / "copy.zarr")
    assert c.record["version"] == 1 and c.read(c.ids).frame.equals(b.read(c.ids).frame)
    with pytest.raises(FingerprintMismatch, match="other metadata or format version"):
        copy_store(old, new)


def test_an_unknown_values_transform_is_refused(store_path):
    f = store_path / "zarr.json"
    doc = json.loads(f.read_text())
    doc["attributes"][spec.ROOT_ATTR]["encoding"]["values"]["transform"] = "xor-lanes"
    f.write_text(json.dumps(doc))
    with pytest.raises(StoreFormatError, match=r"transform 'xor-lanes'.*upgrade kdpipe"):
        StoreReader(store_path)
    assert "transform 'xor-lanes'" in verify_store(store_path).errors[0]


def test_the_writer_refuses_rows_not_in_descending_order(tmp_path):
    meta = small_meta(c=10, rule=Rule("topk", {"k": 3}))
    rows = SparseRows(
        values=np.log(np.array([[0.5, 0.3, 0.1], [0.3, 0.5, 0.1]], dtype=np.float32)),
        tail=np.log(np.full(2, 0.1, dtype=np.float32)),
        num_classes=10,
        indices=np.array([[1, 2, 3], [4, 5, 6]]),
    )
    w = StoreWriter(tmp_path / "s.zarr", meta)
    with pytest.raises(StoreError, match="utterance u1 frame: row 1: entries not in desc"):
        w.add("u1", frame=rows)
    vmeta = small_meta(c=10, rule=Rule("threshold", {"p_min": 0.05}), values="float16")
    csr = SparseRows(
        values=np.log(np.array([0.6, 0.2, 0.1, 0.3], dtype=np.float32)),
        tail=np.log(np.full(3, 0.1, dtype=np.float32)),
        num_classes=10,
        indices=np.array([1, 2, 3, 4]),
        offsets=np.array([0, 1, 1, 4]),  # row 2 = 0.2, 0.1, 0.3: not descending
    )
    with StoreWriter(tmp_path / "v.zarr", vmeta) as w:
        with pytest.raises(StoreError, match="utterance u2 frame: row 2: entries not in desc"):
            w.add("u2", frame=csr)
        ok = np.log(np.array([0.1, 0.6, 0.3, 0.2], dtype=np.float32))
        assert w.add("u2", frame=replace(csr, values=ok))  # rising across rows is fine
