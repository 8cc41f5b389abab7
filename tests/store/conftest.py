"""Fixtures of the target-store tests: small stores, and a real S3 API server on loopback."""

from __future__ import annotations

import logging
import shutil
import socket
import uuid

import pytest
from storehelp import random_utterances, small_meta, write_store

from kdpipe.store.spec import StoreMeta


@pytest.fixture
def meta() -> StoreMeta:
    return small_meta()


@pytest.fixture(scope="session")
def _template_store(tmp_path_factory):
    m = small_meta(levels=("frame", "utt"), hard_labels=("frame",))
    utts = random_utterances(m, 12, seed=1)
    path = tmp_path_factory.mktemp("template") / "targets.zarr"
    write_store(path, m, utts, part_frames=60, chunk_rows=16)
    return path


@pytest.fixture
def store_path(tmp_path, _template_store):
    """A committed 3-part store of 12 utterances (40 classes, top-4) with frame and
    utterance levels and frame hard labels; a fresh copy for each test."""
    path = tmp_path / "targets.zarr"
    shutil.copytree(_template_store, path)
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 and the AWS_* environment pointing at it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL": endpoint,
        }.items():
            mp.setenv(k, v)
        mp.delenv("AWS_PROFILE", raising=False)
        yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket; returns ``s3://<bucket>``."""
    import s3fs

    name = f"kd-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": s3_server}).mkdir(name)
    return f"s3://{name}"
