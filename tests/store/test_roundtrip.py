"""Write-read round trips return exactly what was written, however it is read."""

from __future__ import annotations

import tempfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kdpipe.essence import Rule
from kdpipe.sparse import SparseRows
from kdpipe.store import coding, spec
from kdpipe.store.block import TargetBlock
from kdpipe.store.reader import StoreReader
from kdpipe.store.spec import StoreMeta
from kdpipe.store.writer import StoreWriter
from kdpipe.testing.stores import label_names, random_utterances, write_store


def _expect_rows(got: SparseRows, given_rows: SparseRows, enc: str) -> None:
    """``got`` (read back) holds exactly the encoding of ``given_rows`` (written)."""
    assert got.layout == given_rows.layout and got.num_rows == given_rows.num_rows
    np.testing.assert_array_equal(got.values, coding.encode_logp(given_rows.values, enc))
    np.testing.assert_array_equal(got.tail, coding.encode_logp(given_rows.tail, enc, tail=True))
    if given_rows.indices is not None:
        assert got.indices.dtype == spec.index_dtype(got.num_classes)
        np.testing.assert_array_equal(got.indices, given_rows.indices)
    if given_rows.offsets is not None:
        np.testing.assert_array_equal(got.offsets, given_rows.offsets)
    if enc == "uint8":  # a 0.063-nat grid over [-16, 0]
        err = np.abs(got.logprobs() - np.maximum(given_rows.values, coding.LOGP_MIN))
        assert err.max(initial=0) <= coding.quantization_step(enc) + 1e-6
    else:  # float16: relative precision 2^-11
        err = np.abs(got.logprobs() - given_rows.values)
        assert (err <= 2.0**-11 * np.abs(given_rows.values) + 1e-7).all()


def _check_utterance(block: TargetBlock, i: int, kw: dict, meta: StoreMeta) -> None:
    one = block.utterance(i)
    enc = meta.values
    if "frame" in meta.levels:
        assert one.num_frames == kw["frame"].num_rows
        _expect_rows(one.frame, kw["frame"], enc)
        if "frame" in meta.hard_labels:
            want = np.where(
                kw["hard_frame"] < 0, np.iinfo(one.hard_frame.dtype).max, kw["hard_frame"]
            )
            np.testing.assert_array_equal(one.hard_frame, want)
    if "utt" in meta.levels:
        _expect_rows(one.utt, kw["utt"], enc)
        if "utt" in meta.hard_labels:
            assert int(one.hard_utt[0]) == kw["hard_utt"]
    for got, want in zip(one.members_frame, kw.get("members_frame", []), strict=True):
        _expect_rows(got, want, enc)
    for got, want in zip(one.members_utt, kw.get("members_utt", []), strict=True):
        _expect_rows(got, want, enc)


@st.composite
def store_cases(draw):
    c = draw(st.sampled_from([2, 5, 40, 257, 70_000]))
    big = c > 1000
    rules = [
        Rule("topk", {"k": draw(st.integers(1, min(c, 6)))}),
        Rule("threshold", {"p_min": draw(st.floats(0.01, 0.5))}),
        Rule("cumulative", {"mass": draw(st.floats(0.3, 1.0))}),
        Rule("sample", {"n": draw(st.integers(1, 8))}),
    ]
    if c <= 40:
        rules.append(Rule("full", {}))
    levels = draw(st.sampled_from([("frame",), ("utt",), ("frame", "utt")]))
    meta = StoreMeta(
        labels=label_names(c),
        rule=draw(st.sampled_from(rules)),
        levels=levels,
        values=draw(st.sampled_from(["uint8", "float16"])),
        hard_labels=tuple(lv for lv in levels if draw(st.booleans())),
        members=tuple(f"m{j}" for j in range(draw(st.integers(0, 2)))),
    )
    n = draw(st.integers(1, 3 if big else 10))
    utts = random_utterances(meta, n, seed=draw(st.integers(0, 99)), max_frames=3 if big else 25)
    order = draw(st.permutations(list(utts)))
    return meta, {u: utts[u] for u in order}, draw(st.integers(1, 80)), draw(st.integers(1, 40))


@pytest.mark.slow
@given(case=store_cases(), block_frames=st.integers(1, 100), seed=st.integers(0, 99))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_round_trip_is_exact(case, block_frames, seed):
    meta, utts, part_frames, chunk_rows = case
    with tempfile.TemporaryDirectory() as tmp:
        w = write_store(f"{tmp}/s.zarr", meta, utts, part_frames=part_frames, chunk_rows=chunk_rows)
        r = StoreReader(f"{tmp}/s.zarr")
        assert sorted(r.ids) == sorted(utts) and len(r.parts) == len(w.parts_written)
        assert r.meta == meta
        # streaming: every utterance once, in store order
        seen = []
        for block in r.blocks(block_frames, members=True):
            for i, u in enumerate(block.ids):
                _check_utterance(block, i, utts[u], meta)
            seen += block.ids
        assert seen == r.ids
        # random access, in a shuffled order, one by one and batched
        order = list(np.random.default_rng(seed).permutation(list(utts)))
        batch = r.read(order, members=True)
        assert list(batch.ids) == order
        for i, u in enumerate(order):
            _check_utterance(batch, i, utts[u], meta)
            _check_utterance(r.get(u, members=True), 0, utts[u], meta)
        if "frame" in meta.levels:
            np.testing.assert_array_equal(r.num_frames, [utts[u]["frame"].num_rows for u in r.ids])


def test_densify_of_read_back_matches_the_teacher(tmp_path):
    meta = StoreMeta(labels=label_names(30), rule=Rule("topk", {"k": 30}), values="float16")
    utts = random_utterances(meta, 3, seed=5)
    write_store(tmp_path / "s.zarr", meta, utts)
    r = StoreReader(tmp_path / "s.zarr")
    for u, kw in utts.items():
        got = r.get(u).frame.densify()
        np.testing.assert_allclose(got, kw["frame"].densify(), atol=2e-3)


def test_per_utterance_index_round_trips(tmp_path):
    meta = StoreMeta(
        labels=label_names(12),
        rule=Rule("topk", {"k": 3}),
        levels=("frame", "utt"),
        hard_labels=("utt",),
        subsampling=4,
        frame_shift_ms=40.0,
    )
    utts = random_utterances(meta, 3, seed=6)
    path = tmp_path / "s.zarr"
    with StoreWriter(path, meta) as w:
        for i, (u, kw) in enumerate(utts.items()):
            kw = dict(kw, hard_utt=None) if i == 1 else kw
            window = (10 * i, -1 if i == 0 else 10 * i + 4 * kw["frame"].num_rows)
            w.add(u, **kw, input_window=window, subsampling=4 if i else 3)
    r = StoreReader(path)
    assert r.subsampling.tolist() == [3, 4, 4]
    assert r.frame_shift_ms.tolist() == [40.0] * 3
    assert r.input_window[0].tolist() == [0, -1] and r.input_window[2, 0] == 20
    block = r.read(list(utts))
    assert block.hard_utt[1] == np.iinfo(block.hard_utt.dtype).max  # no label
    assert block.hard_utt[0] == utts[next(iter(utts))]["hard_utt"]
    assert block.input_window.tolist() == r.input_window.tolist()
