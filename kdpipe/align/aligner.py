"""``align_corpus``: GMM-HMM training and forced alignment of a transcribed corpus.

The steps of Kaldi's ``train_mono.sh`` then ``train_deltas.sh``, on kaldi-hmm-gmm:

1. features (MFCC + deltas, per-speaker mean normalisation) and training graphs, in jobs;
2. monophones: flat start (one Gaussian per pdf from the global statistics, equal
   alignments), then EM passes that realign at the configured passes and mix up to the
   target number of Gaussians;
3. triphones (``num_leaves`` > 0): tree statistics from the monophone alignments, a
   decision tree tying the states to ``num_leaves`` (``kdpipe.hmm.tree``), one Gaussian per
   leaf from its statistics, new graphs, then EM passes as above;
4. the final model aligns every split; ``output.write_aligned_dir`` writes the result.

Where this differs from Kaldi: the first triphone pass aligns with the new model instead
of converting the monophone alignments (``convert-ali``), and the GMM statistics of the
jobs are summed through ``gmm.Stats`` (see ``gmm``).

Only the train split trains the models. After every finished pass the model (and the
alignments it will accumulate over) is saved under ``OUT/.work``; a rerun with the same
settings, lexicon and corpus resumes after the last finished pass.

Where the true phones are known (``reference``: the synthetic corpora), every realigning
pass also reports frame agreement and boundary accuracy (``truth.agreement``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import kaldi_hmm_gmm as khg
import numpy as np

from kdpipe.align import gmm, truth
from kdpipe.align.align_config import AlignConfig, StageConfig
from kdpipe.align.jobs import Jobs, split_by_speaker
from kdpipe.corpus.lexicon import Lexicon
from kdpipe.corpus.manifest import Utterance
from kdpipe.errors import AlignmentError
from kdpipe.hmm import tree as trees
from kdpipe.hmm.lang import Lang
from kdpipe.hmm.model import GmmHmm
from kdpipe.hmm.topology import read_topology, topology_text
from kdpipe.hmm.tree_stats import TreeStats
from kdpipe.schema import fingerprint

WORK = ".work"  # resumable state under the output directory


@dataclass
class PassLog:
    """One EM pass, as the report lists it."""

    stage: str
    iteration: int
    realigned: bool
    log_like_per_frame: float
    gaussians: int
    failed: int
    retried: int
    seconds: float
    agreement: dict[str, float] | None = None


@dataclass
class AlignResult:
    """What ``align_corpus`` made: the final model, every utterance's transition ids, the
    utterances that could not be aligned (id, reason), and the log of passes."""

    model: GmmHmm
    lang: Lang
    alignments: dict[str, list[int]]
    failed: list[tuple[str, str]]
    passes: list[PassLog] = field(default_factory=list)
    seconds: float = 0.0
    final_agreement: dict[str, float] | None = None


Progress = Callable[[str], None]


def align_corpus(
    utterances: list[Utterance],
    words: Mapping[str, list[str]],
    lexicon: Lexicon,
    config: AlignConfig,
    work: Path,
    *,
    jobs: int = 1,
    reference: Mapping[str, np.ndarray] | None = None,
    skip_bad: bool = False,
    log: Progress = lambda line: None,
) -> AlignResult:
    """Train monophone then triphone GMM-HMMs on the train utterances, align them all.

    An utterance without features or too short for its transcript is an ``AlignmentError``
    before any training unless ``skip_bad`` (then it is left out and reported)."""
    started = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    lang = Lang.from_lexicon(lexicon, config.silence_prob)
    identity = fingerprint(
        [
            config.to_dict(),
            lexicon.fingerprint,
            sorted((u.id, u.split, u.audio, u.start, u.end) for u in utterances),
            sorted(words.items()),
        ]
    )
    shares = split_by_speaker(utterances, jobs)
    args = [
        (share, {u.id: list(words[u.id]) for u in share}, lexicon, config.mfcc) for share in shares
    ]
    failed: list[tuple[str, str]] = []
    passes: list[PassLog] = []  # this run's and, resumed, the earlier runs' (from state)
    with Jobs(args) as pool:
        log(f"features: {len(utterances)} utterances in {len(pool)} job(s)")
        got = pool.call("compute_features")
        for fails, *_ in got:
            failed.extend(fails)
        count = sum(g[3] for g in got)
        if count == 0:
            raise AlignmentError("align: no training utterance has features (none in train?)")
        mean = sum(g[1] for g in got) / count
        var = sum(g[2] for g in got) / count - mean**2
        topo = topology_text(
            lang.nonsilence_ids, [lang.silence_id], config.num_states, config.num_silence_states
        )
        topo_obj = read_topology(topo)
        mono_tree = khg.monophone_context_dependency(
            phones=topo_obj.phones, phone2num_pdf_classes=topo_obj.get_phone_to_num_pdf_classes()
        )
        state = _State.load(work, identity)
        passes.extend(PassLog(**entry) for entry in state.passes)
        stages: list[tuple[str, StageConfig]] = [("mono", config.mono)]
        if config.num_leaves > 0:
            stages.append(("tri", config.tri))
        model: GmmHmm | None = None
        compiled = False  # whether the jobs hold graphs for ``model``
        for name, stage in stages:
            if state.done(name, stage.iterations):
                model = GmmHmm.load(work / f"{name}.safetensors")
                pool.call("set_alignments", _load_alignments(work / f"{name}.ali.npz"))
                log(f"{name}: done before, {stage.iterations} passes")
                compiled = False
                continue
            resumed = state.stage == name and state.iteration >= 0
            if resumed:
                model = GmmHmm.load(work / f"{name}.safetensors")
                _compile(pool, model, failed)
                pool.call("set_alignments", _load_alignments(work / f"{name}.ali.npz"))
                first = state.iteration + 1
                log(f"{name}: resuming after pass {state.iteration}")
            elif name == "mono":
                model = gmm.init_mono(topo, mono_tree, mean, var)
                _compile(pool, model, failed)
                if failed and not skip_bad:  # bad input: say so before the long work
                    utt, reason = failed[0]
                    more = f" ({len(failed)} such utterances)" if len(failed) > 1 else ""
                    raise AlignmentError(
                        f"utterance {utt}: {reason}{more}; --skip-bad leaves them out"
                    )
                for fails in pool.call("equal_align"):
                    failed.extend(fails)
                first = 0
            else:
                assert model is not None
                model = _triphone_model(pool, model, lang, topo, config, log)
                _compile(pool, model, failed)
                first = 0
            model = _train(
                pool,
                model,
                name,
                stage,
                first,
                config,
                lang,
                work,
                state,
                passes,
                failed,
                reference,
                log,
            )
            compiled = True
        assert model is not None
        if not compiled:  # the last stage was finished before: graphs for the final model
            _compile(pool, model, failed)
        results = pool.call(
            "step",
            model.meta(),
            model.arrays(),
            realign=True,
            accumulate=False,
            options=stages[-1][1].options(config.scales),
            which="all",
        )
        alignments: dict[str, list[int]] = {}
        for part in pool.call("get_alignments"):
            alignments.update(part)
        for r in results:
            failed.extend(r.failed)
    unique = dict(failed)  # one reason per utterance, the latest
    for utt in alignments:
        unique.pop(utt, None)
    final = None
    if reference is not None:
        final = truth.agreement(phone_alignments(model, lang, alignments), reference).to_dict()
    return AlignResult(
        model,
        lang,
        alignments,
        sorted(unique.items()),
        passes,
        time.perf_counter() - started,
        final,
    )


def _compile(pool: Jobs, model: GmmHmm, failed: list[tuple[str, str]]) -> None:
    for fails in pool.call("compile", model.meta(), model.arrays()):
        failed.extend(fails)


def _train(
    pool: Jobs,
    model: GmmHmm,
    name: str,
    stage: StageConfig,
    first: int,
    config: AlignConfig,
    lang: Lang,
    work: Path,
    state: _State,
    passes: list[PassLog],
    failed: list[tuple[str, str]],
    reference: Mapping[str, np.ndarray] | None,
    log: Progress,
) -> GmmHmm:
    """EM passes ``first`` .. ``stage.iterations - 1`` of one stage."""
    start_gauss = model.num_pdfs
    step = (stage.gaussians - start_gauss) // max(stage.mixup_until, 1)
    options = stage.options(config.scales)
    for it in range(first, stage.iterations):
        t0 = time.perf_counter()
        # a stage on a new tree aligns first: Kaldi converts the previous stage's
        # alignments (convert-ali) instead; aligning with the new model serves the same end
        realign = it in stage.realign_at or (it == 0 and name != "mono")
        results = pool.call(
            "step",
            model.meta(),
            model.arrays(),
            realign=realign,
            boost_silence=stage.boost_silence,
            options=options,
        )
        parts = [r.stats for r in results if r.stats is not None]
        stats = parts[0]
        for more in parts[1:]:
            stats = stats + more
        if stats.frames == 0:
            raise AlignmentError(f"align: {name} pass {it}: no training utterance is aligned")
        target = start_gauss + step * min(it + 1, stage.mixup_until)
        update = gmm.estimate(model, stats, target_gaussians=target, power=stage.power)
        agree = None
        if realign:
            alignments = {}
            for part in pool.call("get_alignments"):
                alignments.update(part)
            _save_alignments(work / f"{name}.ali.npz", alignments)
            if reference is not None:
                agree = truth.agreement(
                    phone_alignments(model, lang, alignments), reference
                ).to_dict()
        model.save(work / f"{name}.safetensors")
        entry = PassLog(
            name,
            it,
            realign,
            round(update.log_like_per_frame, 4),
            update.gaussians,
            sum(len(r.failed) for r in results),
            sum(r.retried for r in results),
            round(time.perf_counter() - t0, 2),
            agree,
        )
        passes.append(entry)
        state.finish(name, it, asdict(entry))
        extra = f", phone agreement {agree['frame_agreement']:.3f}" if agree else ""
        log(
            f"{name} pass {it}: log-like/frame {update.log_like_per_frame:.3f}, "
            f"{update.gaussians} Gaussians{', realigned' if realign else ''}{extra}"
        )
        if realign:
            failed.extend(f for r in results for f in r.failed)
    return model


def _triphone_model(
    pool: Jobs, mono: GmmHmm, lang: Lang, topo: str, config: AlignConfig, log: Progress
) -> GmmHmm:
    """Tree statistics from the monophone alignments, the tree, one Gaussian per leaf."""
    stats = TreeStats.total(pool.call("tree_stats", mono.meta(), mono.arrays()))
    topo_obj = mono.topology_object()
    classes = topo_obj.get_phone_to_num_pdf_classes()
    phones = list(topo_obj.phones)
    tree, info = trees.build_tree(
        stats,
        phones=phones,
        num_pdf_classes={p: classes[p] for p in phones},
        silence=[lang.silence_id],
        num_leaves=config.num_leaves,
        min_count=config.tree_min_count,
    )
    log(f"tree: {tree.num_pdfs} leaves from {config.num_leaves} asked")
    return gmm.init_from_leaves(topo, tree, info.means, info.variances)


def phone_alignments(
    model: GmmHmm, lang: Lang, alignments: Mapping[str, list[int]]
) -> dict[str, np.ndarray]:
    """Utterance -> (T,) phone names of its transition ids."""
    names = np.array(lang.phones, dtype=object)[model.phone_of_transition]  # tid -> name
    return {u: names[np.asarray(a)] for u, a in alignments.items()}


def pdf_alignments(model: GmmHmm, alignments: Mapping[str, list[int]]) -> dict[str, np.ndarray]:
    """Utterance -> (T,) pdf ids (tied states) of its transition ids."""
    return {u: model.pdf_of_transition[np.asarray(a)] for u, a in alignments.items()}


# -- resumable state ---------------------------------------------------------------------
@dataclass
class _State:
    path: Path
    identity: str
    stage: str = ""
    iteration: int = -1  # last finished pass of ``stage``
    finished: dict[str, int] = field(default_factory=dict)  # stage -> passes done
    passes: list[dict[str, Any]] = field(default_factory=list)  # the log of finished passes

    @classmethod
    def load(cls, work: Path, identity: str) -> _State:
        path = work / "state.json"
        if path.is_file():
            data = json.loads(path.read_text())
            if data.get("identity") == identity:
                return cls(
                    path,
                    identity,
                    data["stage"],
                    data["iteration"],
                    data["finished"],
                    data.get("passes", []),
                )
        return cls(path, identity)

    def done(self, stage: str, iterations: int) -> bool:
        return self.finished.get(stage, 0) >= iterations

    def finish(self, stage: str, iteration: int, entry: dict[str, Any]) -> None:
        self.stage, self.iteration = stage, iteration
        self.finished[stage] = iteration + 1
        self.passes.append(entry)
        data = {k: v for k, v in asdict(self).items() if k != "path"}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


def _save_alignments(path: Path, alignments: Mapping[str, list[int]]) -> None:
    ids = sorted(alignments)
    lengths = np.array([len(alignments[u]) for u in ids], dtype=np.int64)
    flat = (
        np.concatenate([np.asarray(alignments[u], np.int32) for u in ids])
        if ids
        else np.zeros(0, np.int32)
    )
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, ids=np.array(ids, dtype=np.str_), lengths=lengths, flat=flat)
    tmp.replace(path)


def _load_alignments(path: Path) -> dict[str, list[int]]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        ids, lengths, flat = data["ids"].tolist(), data["lengths"], data["flat"]
    cuts = np.concatenate([[0], np.cumsum(lengths)])
    return {u: flat[a:b].tolist() for u, a, b in zip(ids, cuts[:-1], cuts[1:], strict=True)}
