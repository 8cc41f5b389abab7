"""Shared fixtures. Tests build their own small data with ``kdpipe.testing``."""

from __future__ import annotations

import os

import pytest

# Tests run on CPU and must not fight over the two cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(0)
