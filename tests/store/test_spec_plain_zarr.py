"""The spec and the code agree: docs/store-format.md's plain zarr + numpy reader, run as
written, reads stores kdpipe wrote exactly as ``StoreReader`` does; the recorded layout
matches the spec's tables."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import zarr

from kdpipe.essence import Rule
from kdpipe.store import coding, spec
from kdpipe.store.reader import StoreReader
from kdpipe.testing.stores import random_utterances, small_meta, write_store

DOC = Path(__file__).resolve().parents[2] / "docs" / "store-format.md"


def _plain_reader():
    text = DOC.read_text()
    m = re.search(r"<!-- spec-example: plain-reader.*?-->\n```python\n(.*?)```", text, re.S)
    assert m, "the plain reader example is missing from docs/store-format.md"
    code = m.group(1)
    banned = [line for line in code.splitlines() if "import" in line and "kdpipe" in line]
    assert not banned, "the spec example must not use kdpipe"
    ns: dict = {}
    exec(compile(code, str(DOC), "exec"), ns)
    return ns["read_plain"]


@pytest.mark.parametrize(
    ("rule", "values", "levels"),
    [
        (Rule("topk", {"k": 5}), "uint8", ("frame", "utt")),
        (Rule("cumulative", {"mass": 0.8}), "float16", ("frame",)),
        (Rule("sample", {"n": 6}), "uint8", ("utt",)),
        (Rule("full", {}), "float16", ("frame",)),
    ],
)
def test_the_spec_reader_reads_what_kdpipe_wrote(tmp_path, rule, values, levels):
    meta = small_meta(c=300, rule=rule, values=values, levels=levels)
    utts = random_utterances(meta, 6, seed=9)
    path = tmp_path / "s.zarr"
    write_store(path, meta, utts, part_frames=40)
    (path / "parts" / "leftover").mkdir()  # an uncommitted part must be ignored
    (path / "parts" / "leftover" / "zarr.json").write_text(
        json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}})
    )
    read_plain = _plain_reader()
    r = StoreReader(path)
    for level in levels:
        plain = read_plain(str(path), level)
        assert sorted(plain) == sorted(utts)
        for u in utts:
            rows = getattr(r.get(u), level)
            probs, tail = plain[u]
            np.testing.assert_array_equal(probs, rows.densify())
            np.testing.assert_array_equal(tail, rows.tail_mass())


def test_recorded_layout_matches_the_spec_tables(store_path):
    root = zarr.open_group(store_path, mode="r")
    rec = root.attrs[spec.ROOT_ATTR]
    assert (rec["format"], rec["version"]) == ("kdpipe.store", 3)
    book = {"kind": "log-linear", "min": -16.0, "max": 0.0, "levels": 254, "zero_code": 0}
    assert rec["encoding"]["values"] == {
        "dtype": "uint8",
        "codebook": book,
        "transform": "row-delta",
    }
    assert rec["encoding"]["tail"] == {"dtype": "uint8", "codebook": book}
    part = next(iter(root["parts"].groups()))[1]
    commit = part.attrs[spec.PART_ATTR]
    want = {
        "index/ids/utf8": "uint8",
        "index/ids/offsets": "int64",
        "index/frame_offsets": "int64",
        "index/subsampling": "uint16",
        "index/frame_shift_ms": "float32",
        "index/input_window": "int64",
        "index/quality/entropy": "float32",
        "index/quality/agreement": "float32",
        "frame/indices": "uint8",
        "frame/values": "uint8",
        "frame/tail": "uint8",
        "frame/hard": "uint8",
        "utt/indices": "uint8",
        "utt/values": "uint8",
        "utt/tail": "uint8",
    }
    assert {p: a["dtype"] for p, a in commit["arrays"].items()} == want
    for path in want:
        arr = part[path]
        codecs = arr.metadata.to_dict()["codecs"]
        assert [c["name"] for c in codecs] == ["bytes", "blosc", "crc32c"], (path, codecs)
        blosc = codecs[1]["configuration"]
        class_ids = path.endswith(("indices", "hard"))  # no shuffle: zstd matches repeated ids
        assert blosc["shuffle"] == ("noshuffle" if class_ids else "bitshuffle"), path
        assert (blosc["cname"], blosc["clevel"], blosc["typesize"]) == (
            "zstd",
            5,
            arr.dtype.itemsize,
        )
        assert arr.metadata.chunk_grid.chunk_shape[1:] == arr.shape[1:]  # whole rows
    # dtype rules of the spec
    assert spec.index_dtype(256) == np.uint8 and spec.index_dtype(257) == np.uint16
    assert spec.hard_dtype(255) == np.uint8 and spec.hard_dtype(256) == np.uint16
    assert spec.index_dtype(65537) == np.uint32
    book = coding.log_codebook()
    assert book[0] == -np.inf and book[1] == -16 and book[255] == 0
    np.testing.assert_allclose(np.diff(book[1:]), 16 / 254, atol=2e-6)
