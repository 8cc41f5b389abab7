"""Fixtures of the teach tests: one tiny frame corpus and a few random teachers per session."""

from __future__ import annotations

import pytest
import torch
from teachhelp import feature_store, make_teacher

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A frame-task feature store: 10 train + 3 dev utterances of 20-50 frames, 8 dims."""
    return feature_store(tmp_path_factory.mktemp("corpus") / "feats.zarr")


@pytest.fixture(scope="session")
def teachers(tmp_path_factory, corpus):
    """Checkpoints: blstm, dnn, tdnn (subsampling 2), a blstm over a label subset."""
    d = tmp_path_factory.mktemp("teachers")
    return {
        "blstm": make_teacher(d / "blstm", corpus, "blstm", seed=1),
        "dnn": make_teacher(d / "dnn", corpus, "dnn", seed=2),
        "tdnn": make_teacher(d / "tdnn", corpus, "tdnn", seed=3),
        "subset": make_teacher(d / "subset", corpus, "lstm", seed=4, labels=("sil", "a", "b")),
    }


@pytest.fixture
def s3_bucket(monkeypatch):
    """A moto S3 server on loopback, the AWS_* environment pointing at it, and a fresh
    bucket; yields ``s3://<bucket>``."""
    import logging
    import socket
    import uuid

    import s3fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
    }.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    name = f"kd-{uuid.uuid4().hex[:10]}"
    s3fs.S3FileSystem(client_kwargs={"endpoint_url": endpoint}).mkdir(name)
    yield f"s3://{name}"
    server.stop()
