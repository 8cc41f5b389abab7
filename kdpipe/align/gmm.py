"""One EM step of GMM-HMM training, and forced alignment, on kaldi-hmm-gmm.

The steps of Kaldi's ``gmm-init-mono``, ``gmm-acc-stats-ali``, ``gmm-est`` (with mixing
up) and ``gmm-align-compiled``, as functions over a ``GmmHmm``:

- ``init_mono``: one Gaussian per pdf from the global mean and variance;
- ``accumulate``: an utterance's statistics given its alignment (transition ids), into
  ``Stats`` (plain arrays, so that worker processes can return them and the parent sums);
- ``estimate``: the maximum-likelihood update of transitions and GMMs from summed stats
  (Kaldi's own ``mle_am_diag_gmm_update``), then splitting Gaussians towards a target;
- ``align``: Viterbi alignment through a training graph, retried at a wider beam;
- ``align_scores``: the same for any per-frame pdf scores (a network's pseudo-likelihoods).

kaldi-hmm-gmm cannot copy accumulators between processes (``get_acc`` returns copies and
the accumulator does not serialise), so ``Stats`` keeps each Gaussian's zeroth, first and
second-order statistics as numpy arrays and ``estimate`` hands them back to Kaldi's
accumulator as two weighted points per Gaussian (mean +- standard deviation, half the
count each), which reproduces the three statistics exactly.

Shapes: T frames, D feature dimension, G_i Gaussians of pdf i.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np

from kdpipe.hmm.model import GmmHmm


@dataclass
class Stats:
    """Summed sufficient statistics of one EM step (``+`` adds two)."""

    occupancy: list[np.ndarray]  # per pdf (G_i,) float64
    first: list[np.ndarray]  # per pdf (G_i, D) float64: sum of gamma * x
    second: list[np.ndarray]  # per pdf (G_i, D) float64: sum of gamma * x^2
    transitions: np.ndarray  # (num_transition_ids + 1,) float64 counts
    log_like: float = 0.0  # total frame log-likelihood under the model
    frames: int = 0

    def __add__(self, other: Stats) -> Stats:
        return Stats(
            [a + b for a, b in zip(self.occupancy, other.occupancy, strict=True)],
            [a + b for a, b in zip(self.first, other.first, strict=True)],
            [a + b for a, b in zip(self.second, other.second, strict=True)],
            self.transitions + other.transitions,
            self.log_like + other.log_like,
            self.frames + other.frames,
        )


class Accumulator:
    """Kaldi's accumulators for one pass over some utterances (one per worker)."""

    def __init__(self, model: GmmHmm) -> None:
        self.model = model
        self.gmm = khg.AccumAmDiagGmm()
        self.gmm.init(model=model.am, flags=khg.GmmUpdateFlags.kGmmAll)
        self.transitions = np.asarray(model.tm.init_stats(), dtype=np.float64)  # (N + 1,)
        self.pdf_of = model.pdf_of_transition  # tid -> pdf
        self.log_like, self.frames = 0.0, 0

    def add(self, feats: np.ndarray, alignment: Sequence[int]) -> None:
        """One utterance: (T, D) float32 features and its (T,) transition ids."""
        am, acc = self.model.am, self.gmm
        tids = np.asarray(alignment, dtype=np.int64)  # (T,)
        # TransitionModel.accumulate adds 1 at each frame's transition id: one bincount
        # instead of a copy of the (N + 1,) stats through pybind11 per frame
        self.transitions += np.bincount(tids, minlength=len(self.transitions))
        for t, pdf in enumerate(self.pdf_of[tids].tolist()):
            self.log_like += acc.accumulate_for_gmm(
                model=am, data=feats[t], gmm_index=pdf, weight=1.0
            )
        self.frames += len(tids)

    def stats(self) -> Stats:
        accs = [self.gmm.get_acc(i) for i in range(self.gmm.num_accs)]
        return Stats(
            [np.asarray(a.occupancy, np.float64) for a in accs],
            [np.asarray(a.mean_accumulator, np.float64) for a in accs],
            [np.asarray(a.variance_accumulator, np.float64) for a in accs],
            np.asarray(self.transitions, np.float64),
            self.log_like,
            self.frames,
        )


def init_mono(
    topology: str, tree: khg.ContextDependency, mean: np.ndarray, var: np.ndarray
) -> GmmHmm:
    """``gmm-init-mono``: every pdf one Gaussian with the global (D,) mean and variance."""
    gmm = khg.DiagGmm(nmix=1, dim=len(mean))
    gmm.set_weights(np.ones(1, dtype=np.float32))
    gmm.set_means(np.asarray(mean, np.float32)[None])
    gmm.set_invvars((1.0 / np.maximum(np.asarray(var, np.float32), 1e-6))[None])
    gmm.compute_gconsts()
    am = khg.AmDiagGmm()
    for _ in range(tree.num_pdfs):
        am.add_pdf(gmm)
    return GmmHmm.new(topology, tree, am)


def init_from_leaves(
    topology: str, tree: khg.ContextDependency, means: np.ndarray, variances: np.ndarray
) -> GmmHmm:
    """``gmm-init-model``: pdf j one Gaussian with the (L, D) statistics of tree leaf j."""
    am = khg.AmDiagGmm()
    for mean, var in zip(means, variances, strict=True):
        gmm = khg.DiagGmm(nmix=1, dim=len(mean))
        gmm.set_weights(np.ones(1, dtype=np.float32))
        gmm.set_means(np.asarray(mean, np.float32)[None])
        gmm.set_invvars((1.0 / np.maximum(np.asarray(var, np.float32), 1e-6))[None])
        gmm.compute_gconsts()
        am.add_pdf(gmm)
    return GmmHmm.new(topology, tree, am)


@dataclass(frozen=True)
class Update:
    """What an ``estimate`` did: objective per frame, frames, Gaussians after mixing up."""

    log_like_per_frame: float
    frames: int
    gaussians: int


def estimate(
    model: GmmHmm,
    stats: Stats,
    *,
    target_gaussians: int,
    power: float,
    min_count: float = 20.0,
    perturb: float = 0.01,
    min_gaussian_occupancy: float = 10.0,
) -> Update:
    """``gmm-est --mix-up``: ML update of transitions and GMMs, then split Gaussians of
    the pdfs by occupancy^power towards ``target_gaussians`` (no-op when already there)."""
    tm, am = model.tm, model.am
    tm.mle_update(stats.transitions, khg.MleTransitionUpdateConfig())
    acc = khg.AccumAmDiagGmm()
    acc.init(model=am, flags=khg.GmmUpdateFlags.kGmmAll)
    for pdf, (occ, first, second) in enumerate(
        zip(stats.occupancy, stats.first, stats.second, strict=True)
    ):
        for g in np.flatnonzero(occ > 0):
            mean = first[g] / occ[g]  # (D,)
            spread = np.sqrt(np.maximum(second[g] / occ[g] - mean * mean, 0.0))  # (D,)
            for point in (mean + spread, mean - spread):
                acc.accumulate_for_gaussian(
                    am=am,
                    data=point.astype(np.float32),
                    gmm_index=pdf,
                    gauss_index=int(g),
                    weight=float(occ[g]) / 2,
                )
    opts = khg.MleDiagGmmOptions()
    opts.min_gaussian_occupancy = min_gaussian_occupancy
    khg.mle_am_diag_gmm_update(
        config=opts, amdiag_gmm_acc=acc, flags=khg.str_to_gmm_flags("mvwt"), am_gmm=am
    )
    if target_gaussians > am.num_gauss:
        occs = np.array([occ.sum() for occ in stats.occupancy], dtype=np.float32)
        am.split_by_count(
            state_occs=occs,
            target_components=target_gaussians,
            perturb_factor=perturb,
            power=power,
            min_count=min_count,
        )
    return Update(stats.log_like / max(stats.frames, 1), stats.frames, int(am.num_gauss))


def boosted(model: GmmHmm, silence_ids: list[int], factor: float) -> GmmHmm:
    """``gmm-boost-silence``: a copy whose silence pdfs' weights are scaled by ``factor``
    (for aligning only; 1.0 returns ``model`` itself)."""
    if factor == 1.0:
        return model
    am = khg.AmDiagGmm()
    am.copy_from_am_diag_gmm(model.am)
    for pdf in khg.get_pdfs_for_phones(model.tm, sorted(silence_ids))[1]:
        gmm = am.get_pdf(pdf)
        gmm.set_weights(np.asarray(gmm.weights, np.float32) * factor)
        gmm.compute_gconsts()
    return GmmHmm(model.topology, model.tree, model.tm, am)


@dataclass(frozen=True)
class AlignOptions:
    """``gmm-align-compiled`` settings (Kaldi's ``--scale-opts`` and beams)."""

    beam: float = 10.0
    retry_beam: float = 40.0
    acoustic_scale: float = 0.1
    transition_scale: float = 1.0
    self_loop_scale: float = 0.1
    careful: bool = False


def _with_transitions(
    model: GmmHmm, graph: kaldifst.StdVectorFst, opts: AlignOptions
) -> kaldifst.StdVectorFst:
    fst = graph.copy()
    khg.add_transition_probs(
        trans_model=model.tm,
        transition_scale=opts.transition_scale,
        self_loop_scale=opts.self_loop_scale,
        fst=fst,
    )
    return fst


def _viterbi(
    utt: str, fst: kaldifst.StdVectorFst, decodable: khg.DecodableInterface, opts: AlignOptions
) -> tuple[list[int] | None, bool, float]:
    """(transition ids or None, retried, log-likelihood) of one utterance."""
    cfg = khg.AlignConfig()
    cfg.beam, cfg.retry_beam, cfg.careful = opts.beam, opts.retry_beam, opts.careful
    done, _, retried, like, _, alignment, _ = khg.align_utterance_wrapper(
        config=cfg,
        utt=utt,
        acoustic_scale=opts.acoustic_scale,
        fst=fst,
        decodable=decodable,
        num_done=0,
        num_error=0,
        num_retried=0,
        tot_like=0.0,
        frame_count=0,
    )
    return (list(alignment) if done else None), bool(retried), float(like)


def align(
    model: GmmHmm, utt: str, graph: kaldifst.StdVectorFst, feats: np.ndarray, opts: AlignOptions
) -> tuple[list[int] | None, bool, float]:
    """Forced alignment with the GMMs: (transition ids (T,) or None, retried, log-like)."""
    decodable = khg.DecodableAmDiagGmmScaled(
        am=model.am, tm=model.tm, feats=feats, scale=opts.acoustic_scale
    )
    return _viterbi(utt, _with_transitions(model, graph, opts), decodable, opts)


def align_scores(
    model: GmmHmm, utt: str, graph: kaldifst.StdVectorFst, scores: np.ndarray, opts: AlignOptions
) -> tuple[list[int] | None, bool, float]:
    """Forced alignment with given (T, num_pdfs) per-frame pdf log-scores (e.g. a network's
    log posterior minus log prior), scaled by ``opts.acoustic_scale``."""
    pdf_of = model.pdf_of_transition[1:]  # transition ids 1..N
    matrix = np.ascontiguousarray(scores[:, pdf_of] * opts.acoustic_scale, dtype=np.float32)
    decodable = khg.DecodableCtc(feats=matrix)  # column j is transition id j + 1
    return _viterbi(utt, _with_transitions(model, graph, opts), decodable, opts)


def equal_alignment(
    graph: kaldifst.StdVectorFst, num_frames: int, seed: int = 3
) -> list[int] | None:
    """``align-equal-compiled``: a path of the graph spread evenly over the frames."""
    ok, fst = kaldifst.equal_align(ifst=graph, length=num_frames, rand_seed=seed, num_retries=10)
    if not ok:
        return None
    ok, alignment, _, _ = kaldifst.get_linear_symbol_sequence(fst)
    return list(alignment) if ok and len(alignment) == num_frames else None
