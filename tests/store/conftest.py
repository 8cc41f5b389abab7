"""Fixtures of the target-store tests: small stores (the S3 server is in tests/conftest.py)."""

from __future__ import annotations

import shutil

import pytest

from kdpipe.store.spec import StoreMeta
from kdpipe.testing.stores import random_utterances, small_meta, write_store


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
