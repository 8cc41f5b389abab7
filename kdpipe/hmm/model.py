"""``GmmHmm``: a Kaldi GMM-HMM (topology, tree, transition model, GMMs) and its safe file.

Kaldi keeps such a model in ``final.mdl`` + ``tree``; kaldi-hmm-gmm can give its objects'
state only as Python tuples (for pickle), which kdpipe never writes or reads. So a model is
saved as one safetensors file: the GMMs' arrays (per pdf: weights, means and inverse
variances, as ``AmDiagGmm`` holds them) and the transition log-probabilities, with the
topology (Kaldi text) and the tree (Kaldi's binary ContextDependency, base64) in its
metadata. Loading rebuilds the transition model from topology and tree, then restores the
trained probabilities; nothing is unpickled.
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass
from pathlib import Path

import kaldi_hmm_gmm as khg
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save

from kdpipe.errors import ModelError
from kdpipe.hmm.event_map import KaldiTree, kaldi_binary
from kdpipe.hmm.topology import read_topology
from kdpipe.safetensors_io import canonical_safetensors

FORMAT = "kdpipe.gmm-hmm"
VERSION = 1
_LOG_PROBS = 6  # positions of the trained log-probabilities in TransitionModel's state
_NON_SELF_LOOP = 7


@dataclass
class GmmHmm:
    """The four parts of a Kaldi GMM-HMM. Mutable: training updates ``am`` and ``tm``."""

    topology: str  # Kaldi <Topology> text
    tree: khg.ContextDependency
    tm: khg.TransitionModel
    am: khg.AmDiagGmm

    @classmethod
    def new(cls, topology: str, tree: khg.ContextDependency, am: khg.AmDiagGmm) -> GmmHmm:
        """A model with the topology's initial transition probabilities."""
        return cls(
            topology, tree, khg.TransitionModel(ctx_dep=tree, hmm_topo=read_topology(topology)), am
        )

    @property
    def num_pdfs(self) -> int:
        return int(self.tree.num_pdfs)

    @property
    def num_gauss(self) -> int:
        return int(self.am.num_gauss)

    def arrays(self) -> dict[str, np.ndarray]:
        """Every trained number, by name (for saving and for worker processes)."""
        state = self.tm.__getstate__()
        out = {
            "transitions/log_probs": np.asarray(state[_LOG_PROBS], dtype=np.float32),
            "transitions/non_self_loop": np.asarray(state[_NON_SELF_LOOP], dtype=np.float32),
        }
        gmm = self.am.__getstate__()  # (weights, means, inverse variances) per pdf
        for i, arr in enumerate(gmm):
            out[f"gmm/{i // 3}/{i % 3}"] = np.ascontiguousarray(arr)
        return out

    def meta(self) -> dict[str, str]:
        return {
            "format": FORMAT,
            "version": str(VERSION),
            "topology": self.topology,
            "tree": base64.b64encode(kaldi_binary(self.tree)).decode(),
        }

    @classmethod
    def from_parts(cls, meta: dict[str, str], arrays: dict[str, np.ndarray]) -> GmmHmm:
        """The model of ``meta()`` and ``arrays()`` (pybind11 restores state only into
        fresh objects, hence ``__new__``)."""
        tree = KaldiTree.from_kaldi_binary(base64.b64decode(meta["tree"])).to_khg()
        fresh = khg.TransitionModel(ctx_dep=tree, hmm_topo=read_topology(meta["topology"]))
        state = list(fresh.__getstate__())
        state[_LOG_PROBS] = arrays["transitions/log_probs"].tolist()
        state[_NON_SELF_LOOP] = arrays["transitions/non_self_loop"].tolist()
        tm = khg.TransitionModel.__new__(khg.TransitionModel)
        tm.__setstate__(tuple(state))
        num = sum(1 for k in arrays if k.startswith("gmm/") and k.endswith("/0"))
        am = khg.AmDiagGmm.__new__(khg.AmDiagGmm)
        am.__setstate__(tuple(arrays[f"gmm/{i}/{j}"] for i in range(num) for j in range(3)))
        return cls(meta["topology"], tree, tm, am)

    def save(self, path: str | Path) -> None:
        """Write the model to ``path``: the same model gives the same bytes (sorted header)."""
        Path(path).write_bytes(canonical_safetensors(save(self.arrays(), metadata=self.meta())))

    @classmethod
    def load(cls, path: str | Path) -> GmmHmm:
        p = Path(path)
        if not p.is_file():
            raise ModelError(f"GMM-HMM not found: {p}")
        try:
            with safe_open(str(p), framework="numpy") as f:
                meta = dict(f.metadata() or {})
            arrays = load_file(str(p))
        except (OSError, ValueError) as e:
            raise ModelError(f"{p}: not a readable GMM-HMM file: {e}") from None
        if meta.get("format") != FORMAT or meta.get("version") != str(VERSION):
            raise ModelError(f"{p}: not a {FORMAT} file of version {VERSION}")
        return cls.from_parts(meta, arrays)

    def topology_object(self) -> khg.HmmTopology:
        return read_topology(self.topology)

    @functools.cached_property
    def phone_of_transition(self) -> np.ndarray:
        """(N + 1,) int64: the phone of each transition id 1..N (index 0 unused)."""
        ids = range(1, self.tm.num_transition_ids + 1)
        return np.array([0, *(self.tm.transition_id_to_phone(t) for t in ids)], dtype=np.int64)

    @functools.cached_property
    def pdf_of_transition(self) -> np.ndarray:
        """(N + 1,) int64: the pdf of each transition id 1..N (index 0 unused)."""
        return np.asarray(self.tm.transition_id_to_pdf_array(), dtype=np.int64)

    def info(self) -> dict[str, int]:
        return {
            "phones": len(self.tm.phones),
            "pdfs": self.num_pdfs,
            "transition_ids": int(self.tm.num_transition_ids),
            "gaussians": self.num_gauss,
            "dim": int(self.am.dim),
        }
