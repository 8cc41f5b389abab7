"""Remote stores for real: an S3 API server (moto) and an HTTP server on loopback."""

from __future__ import annotations

import functools
import http.server
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from kdpipe.errors import StoreError, StoreIntegrityError
from kdpipe.store.parts import seal
from kdpipe.store.reader import StoreReader
from kdpipe.store.transfer import copy_store
from kdpipe.store.verify import verify_store
from kdpipe.testing.stores import random_utterances, small_meta, write_store


def _same_content(a: StoreReader, b: StoreReader) -> None:
    assert a.ids == b.ids and a.meta == b.meta
    for x, y in zip(a.blocks(members=True), b.blocks(members=True), strict=True):
        assert x.ids == y.ids
        for lv in ("frame", "utt"):
            rx, ry = getattr(x, lv), getattr(y, lv)
            assert (rx is None) == (ry is None)
            if rx is not None:
                assert rx.equals(ry)
        assert np.array_equal(x.hard_frame, y.hard_frame)


# An S3 request to the in-process moto server costs ~20 ms: remote tests use small stores
# of few arrays (frame level + hard labels: 9 arrays per part), two parts at most.
META = small_meta(hard_labels=("frame",))
UTTS = random_utterances(META, 6, seed=21)


@pytest.fixture
def small_store(tmp_path):
    path = tmp_path / "small.zarr"
    write_store(path, META, UTTS, part_frames=60)
    return path


@pytest.mark.slow
def test_write_verify_read_copy_through_s3(tmp_path, s3_bucket, small_store):
    url = f"{s3_bucket}/targets.zarr"
    w = write_store(url, META, UTTS, part_frames=60)  # credentials, endpoint: AWS_* env
    assert len(w.parts_written) == 2
    r = StoreReader(url, labels=META.labels)
    assert not r.sealed
    local = StoreReader(small_store)
    _same_content(r, local)
    u = list(UTTS)[3]
    assert r.get(u).frame.equals(local.get(u).frame)
    rep = verify_store(url, corpus_ids=list(UTTS))
    assert rep.ok, rep.errors
    # back to local disk, re-chunked, every array checked against its commit checksum
    back = tmp_path / "back.zarr"
    copy_store(url, back, chunk_rows=32)
    b = StoreReader(back)
    _same_content(b, local)
    assert b.sealed and b.parts[0].arrays["frame/values"]["chunks"] == [32, 4]


def test_damage_on_s3_is_caught(s3_server, s3_bucket, tmp_path):
    import s3fs

    url = f"{s3_bucket}/t.zarr"
    write_store(url, META, UTTS)  # one part
    fs = s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server})
    part = fs.ls(f"{url}/parts")[0].rsplit("/", 1)[-1]
    fs.rm(f"{url}/parts/{part}/frame/values/c/0/0")
    with pytest.raises(StoreIntegrityError, match=r"frame/values: chunk .* is missing"):
        list(StoreReader(url).blocks())
    assert any("frame/values: chunk" in e for e in verify_store(url).errors)


@pytest.mark.slow
def test_cli_reaches_s3_through_the_standard_environment(tmp_path, s3_bucket, small_store):
    env = dict(os.environ)  # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID... set by the fixture
    url = f"{s3_bucket}/cli.zarr"

    def kdpipe(*args):
        return subprocess.run(
            [sys.executable, "-m", "kdpipe.cli.main", "store", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )

    out = kdpipe("copy", str(small_store), url, "--chunk-rows", "64")
    assert out.returncode == 0, out.stderr
    assert "copied 2 parts" in out.stdout
    out = kdpipe("verify", url)
    assert out.returncode == 0 and "OK" in out.stdout, out.stderr
    out = kdpipe("inspect", f"{s3_bucket}/nothing-here.zarr")  # one line, exit 1
    assert out.returncode == 1 and "not a zarr v3 target store" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


@pytest.fixture
def http_root(tmp_path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: one connection for many requests

        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_sealed_store_reads_over_http(http_root, small_store):
    import shutil

    store_path = small_store
    root, base = http_root
    shutil.copytree(store_path, root / "t.zarr")
    with pytest.raises(StoreError, match="not sealed; run `kdpipe store seal`"):
        StoreReader(f"{base}/t.zarr")
    assert seal(root / "t.zarr") == len(StoreReader(store_path).parts)
    r = StoreReader(f"{base}/t.zarr")
    assert r.sealed
    _same_content(r, StoreReader(store_path))
    u = r.ids[5]
    np.testing.assert_array_equal(
        r.get(u).frame.values, StoreReader(store_path).get(u).frame.values
    )
    assert verify_store(f"{base}/t.zarr").ok
