"""The GMM-HMM file: the same model saved twice gives the same bytes, and loads back."""

from __future__ import annotations

import kaldi_hmm_gmm as khg
import numpy as np

from kdpipe.align.gmm import init_mono
from kdpipe.hmm.model import GmmHmm
from kdpipe.hmm.topology import read_topology, topology_text


def tiny_model() -> GmmHmm:
    topo = topology_text([2, 3, 4], [1])
    obj = read_topology(topo)
    tree = khg.monophone_context_dependency(
        phones=obj.phones, phone2num_pdf_classes=obj.get_phone_to_num_pdf_classes()
    )
    return init_mono(topo, tree, np.arange(4, dtype=np.float32), np.ones(4, np.float32))


def test_saving_a_model_twice_gives_the_same_bytes(tmp_path):
    """safetensors writes its metadata in hash-map order (different from call to call):
    the file must not depend on it, so a model's sha256 is reproducible."""
    model = tiny_model()
    paths = [tmp_path / f"m{i}.safetensors" for i in range(6)]
    for path in paths:
        model.save(path)
    first = paths[0].read_bytes()
    assert all(p.read_bytes() == first for p in paths[1:])
    back = GmmHmm.load(paths[0])
    assert back.info() == model.info() and back.meta() == model.meta()
    for key, value in model.arrays().items():
        np.testing.assert_array_equal(back.arrays()[key], value)
    back.save(tmp_path / "again.safetensors")
    assert (tmp_path / "again.safetensors").read_bytes() == first
