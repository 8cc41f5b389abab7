"""``chunkio``: row ranges read by our threads equal what zarr reads, on a local store and on
a store that is not a local directory (zarr's MemoryStore: the ``store.get`` path), and every
damaged, missing or misshapen chunk is an error naming the array and the chunk."""

from __future__ import annotations

import multiprocessing
import tempfile
from pathlib import Path

import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.codecs import ZstdCodec
from zarr.storage import LocalStore, MemoryStore

from kdpipe.errors import StoreIntegrityError
from kdpipe.essence import Rule
from kdpipe.store import arrayio, chunkio
from kdpipe.store.coding import delta_decode, delta_encode
from kdpipe.testing.stores import damage_file

DTYPES = ["uint8", "uint16", "uint32", "int64", "float16", "float32"]


def _write(store, data: np.ndarray, chunk_rows: int) -> zarr.Array:
    """``data`` stored as the format stores arrays (``arrayio.write_arrays``: its codecs)."""
    group = zarr.open_group(store, mode="w", zarr_format=3)
    arrayio.write_arrays(group, {"a/x": (data, chunk_rows)})
    return arrayio.open_arrays(store, ["a/x"])[0]


def _read(arr, a: int, b: int, post=None) -> np.ndarray:
    posts = None if post is None else [post]
    return arrayio.read_slices([arr], [slice(a, b)], ["array a/x"], posts=posts)[0]


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    width=st.sampled_from([None, 1, 3, 8]),
    dtype=st.sampled_from(DTYPES),
    chunk_rows=st.integers(1, 64),
    local=st.booleans(),
    cuts=st.lists(st.integers(0, 320), min_size=2, max_size=2),
    seed=st.integers(0, 2**16),
)
def test_row_ranges_equal_the_data_and_zarr(n, width, dtype, chunk_rows, local, cuts, seed):
    rng = np.random.default_rng(seed)
    shape = (n,) if width is None else (n, width)
    data = (rng.random(shape) * 200).astype(dtype)
    with tempfile.TemporaryDirectory() as tmp:
        arr = _write(LocalStore(tmp) if local else MemoryStore(), data, chunk_rows)
        assert isinstance(arr, chunkio.ChunkedArray)  # read by chunkio, not zarr
        a, b = sorted(cuts)
        got = _read(arr, a, b)
        np.testing.assert_array_equal(got, data[a:b])
        np.testing.assert_array_equal(got, zarr.open_array(arr.store, path="a/x")[a:b])
        assert got.dtype == data.dtype
        whole = arrayio.read_slices([arr], [Ellipsis], ["array a/x"])[0]
        np.testing.assert_array_equal(whole, data)


def test_a_few_rows_do_not_keep_their_chunks_alive(tmp_path):
    data = np.arange(4000, dtype=np.uint16).reshape(500, 8)
    arr = _write(LocalStore(tmp_path), data, 128)
    few = _read(arr, 130, 135)  # 5 rows of a 128-row chunk
    np.testing.assert_array_equal(few, data[130:135])
    assert few.base is None or few.base.nbytes == few.nbytes
    many = _read(arr, 0, 500)
    np.testing.assert_array_equal(many, data)


def test_a_row_wise_transform_is_applied_chunk_by_chunk(tmp_path):
    rng = np.random.default_rng(0)
    codes = -np.sort(-rng.integers(0, 256, (1000, 8)), axis=1).astype(np.uint8)  # descending
    arr = _write(LocalStore(tmp_path), delta_encode(codes), 64)
    np.testing.assert_array_equal(_read(arr, 37, 900, post=delta_decode), codes[37:900])


def test_other_codecs_are_read_by_zarr(tmp_path):
    data = np.arange(500, dtype=np.uint16).reshape(250, 2)
    zarr.create_array(
        LocalStore(tmp_path), name="x", data=data, chunks=(16, 2), compressors=[ZstdCodec()]
    )
    arr = arrayio.open_arrays(LocalStore(tmp_path), ["x"])[0]
    assert isinstance(arr, zarr.Array)
    np.testing.assert_array_equal(_read(arr, 3, 200), data[3:200])
    np.testing.assert_array_equal(_read(arr, 0, 10, post=lambda x: x + 1), data[:10] + 1)


def test_a_scalar_array_is_read_whole_by_zarr():
    store = MemoryStore()
    zarr.open_group(store, mode="w", zarr_format=3).create_array("s", data=np.array(5))
    arr = arrayio.open_arrays(store, ["s"])[0]
    assert isinstance(arr, zarr.Array)  # no rows: not the format's layout
    assert arrayio.read_slices([arr], [Ellipsis], ["array s"])[0] == 5


@pytest.fixture
def stored(tmp_path):
    data = np.arange(4000, dtype=np.uint16).reshape(500, 8)
    return _write(LocalStore(tmp_path), data, 128), tmp_path / "a" / "x" / "c"


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "missing"])
def test_damaged_or_missing_chunks_name_the_array_and_chunk(stored, damage):
    arr, chunks = stored
    damage_file(chunks / "1" / "0", damage, mask=0x10)
    np.testing.assert_array_equal(_read(arr, 0, 128), np.arange(1024).reshape(128, 8))  # fine
    with pytest.raises(StoreIntegrityError, match=r"array a/x: chunk c/1/0"):
        _read(arr, 100, 300)


def test_a_chunk_of_the_wrong_size_is_refused_even_with_a_valid_checksum(stored, tmp_path):
    """A valid chunk of another array (fewer rows) put in place of chunk 1: decoding it
    would fill only part of the rows; the blosc header's size is checked first."""
    arr, chunks = stored
    other = _write(LocalStore(tmp_path / "other"), np.ones((64, 8), np.uint16), 64)
    (chunks / "1" / "0").write_bytes((tmp_path / "other/a/x/c/0/0").read_bytes())
    assert other.shape == (64, 8)
    with pytest.raises(StoreIntegrityError, match=r"chunk c/1/0: cannot decode: 1024 bytes"):
        _read(arr, 0, 500)


def _read_in_child(path: str, q) -> None:
    arr = arrayio.open_arrays(LocalStore(path, read_only=True), ["a/x"])[0]
    q.put(_read(arr, 0, 500).sum(dtype=np.int64))


def test_a_forked_child_reads_with_its_own_threads(stored, tmp_path):
    """A DataLoader worker is a forked child: the parent's decoding threads are not there."""
    arr, _ = stored
    want = int(_read(arr, 0, 500).sum(dtype=np.int64))  # the parent's pool now exists
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(str(tmp_path), q))
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert p.exitcode == 0 and got == want
    assert Path(tmp_path).is_dir()


@pytest.mark.parametrize("values", ["uint8", "float16"])
@pytest.mark.parametrize(
    "rule", [Rule("topk", {"k": 4}), Rule("threshold", {"p_min": 0.05}), Rule("full", {})]
)
def test_every_array_a_writer_makes_is_read_by_chunkio(tmp_path, values, rule):
    """The codec chain is defined once (``coding.CODEC_CHAIN``): what the writer stores is
    what the fast reader recognises, so no array silently falls back to zarr's reader."""
    import json

    from kdpipe.store.coding import CODEC_CHAIN
    from kdpipe.testing.stores import random_utterances, small_meta, write_store

    meta = small_meta(levels=("frame", "utt"), hard_labels=("frame",), values=values, rule=rule)
    path = tmp_path / "t.zarr"
    write_store(path, meta, random_utterances(meta, 5, seed=3), part_frames=40, chunk_rows=8)
    docs = sorted(path.glob("parts/*/**/zarr.json"))
    arrays = [d for d in docs if json.loads(d.read_text())["node_type"] == "array"]
    assert arrays
    store = LocalStore(path, read_only=True)
    for doc in arrays:
        data = json.loads(doc.read_text())
        assert tuple(c["name"] for c in data["codecs"]) == CODEC_CHAIN
        key = str(doc.parent.relative_to(path))
        assert isinstance(chunkio.ChunkedArray.parse(data, store, key), chunkio.ChunkedArray)
