"""Fixtures of the teach tests: one tiny frame corpus and a few random teachers per session."""

from __future__ import annotations

import pytest
import torch

from kdpipe.testing.teachers import make_teacher, teacher_corpus

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """A frame-task feature store: 10 train + 3 dev utterances of 20-50 frames, 8 dims."""
    return teacher_corpus(tmp_path_factory.mktemp("corpus") / "feats.zarr")


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
