"""Fingerprints of fbank feature stores are pinned: literal values computed with the code
as it was before transcribed corpora, external features and the ``texts`` column came in.

A change here means every feature store a user made before gets another fingerprint, so
every checkpoint card and target store made from it stops matching: do not update these
values without a migration story.
"""

from __future__ import annotations

import pytest

from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.testing.corpora import (
    make_feature_store,
    make_hdf5_archive,
    make_kaldi_dir,
    make_speech_commands,
)


@pytest.mark.parametrize(
    ("task", "cmvn", "expected"),
    [
        ("frame", "utterance", "ee0aa89ac1062c8a"),
        ("frame", "global", "0108bcd18a5272f7"),
        ("clip", "utterance", "f11c454740f9baa1"),
        ("clip", "global", "4d33461434a981f1"),
    ],
)
def test_writer_fingerprints_are_unchanged(task, cmvn, expected):
    assert make_feature_store(task=task, cmvn=cmvn, seed=0).fingerprint == expected


def test_prepared_fingerprints_are_unchanged(tmp_path):
    """The same inputs through ``prepare``: Kaldi dirs (with ``text`` files, which frame
    stores now keep but do not hash), HDF5 archives and a Speech Commands folder."""
    make_kaldi_dir(tmp_path / "k", seed=0)
    make_kaldi_dir(tmp_path / "k2", splits=None, alignment="scp", segments=True, seed=1)
    make_hdf5_archive(tmp_path / "a.h5", task="frame")
    make_hdf5_archive(tmp_path / "c.h5", task="clip")
    make_speech_commands(tmp_path / "sc")
    expected = {
        "k": "27472d07438015c2",
        "k2": "0665bf195f3bead8",
        "a.h5": "2bac556c3c3fdfac",
        "c.h5": "8450aedda0675c7a",
        "sc": "89cb8285d31e26b3",
    }
    got = {
        name: prepare_corpus(
            tmp_path / name, tmp_path / f"{name}.zarr", jobs=1, progress=False
        ).fingerprint
        for name in expected
    }
    assert got == expected
