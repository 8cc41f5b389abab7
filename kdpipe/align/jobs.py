"""Alignment jobs: Kaldi's ``nj`` split, as worker processes that keep their share.

Utterances are split by speaker (as ``split_data.sh`` does, so that per-speaker mean
normalisation stays within a job). Each job keeps its utterances' features, training
graphs and current alignments in memory for the whole run; per EM iteration the parent
sends the model's arrays, every job aligns (when asked) and accumulates its share, and the
parent sums the returned ``Stats`` before the update: the same division of work as Kaldi's
``gmm-align-compiled`` / ``gmm-acc-stats-ali`` jobs followed by ``gmm-sum-accs``.

``jobs == 1`` runs the same ``Share`` methods in the parent process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from kdpipe import errors
from kdpipe.align import gmm
from kdpipe.align.features import MfccConfig, compute_mfcc, normalize
from kdpipe.corpus.audio import load_audio
from kdpipe.corpus.lexicon import Lexicon
from kdpipe.corpus.manifest import Utterance
from kdpipe.errors import KdpipeError
from kdpipe.hmm.lang import GraphCompiler, Lang
from kdpipe.hmm.model import GmmHmm
from kdpipe.hmm.tree_stats import TreeStats, accumulate_tree_stats


@dataclass
class StepResult:
    """One job's part of an EM iteration."""

    stats: gmm.Stats | None
    failed: list[tuple[str, str]] = field(default_factory=list)  # (utt id, reason)
    retried: int = 0
    log_like: float = 0.0  # alignment log-likelihood of the aligned utterances
    frames: int = 0


class Share:
    """One job's utterances: features, graphs, alignments (see the module docstring)."""

    def __init__(
        self,
        utterances: list[Utterance],
        words: dict[str, list[str]],
        lexicon: Lexicon,
        mfcc: MfccConfig,
    ) -> None:
        self.utterances = {u.id: u for u in utterances}
        self.words = words  # utt id -> transcript words
        self.lang = Lang.from_lexicon(lexicon)
        self.mfcc = mfcc
        self.feats: dict[str, np.ndarray] = {}
        self.graphs: dict[str, Any] = {}
        self.alignments: dict[str, list[int]] = {}
        self.training: set[str] = {u.id for u in utterances if u.split == "train"}

    # -- features -------------------------------------------------------------------
    def compute_features(self) -> tuple[list[tuple[str, str]], np.ndarray, np.ndarray, int]:
        """MFCC + deltas of every utterance; returns (failures, sum (D,), sum of squares
        (D,), frames) over the training utterances (for the flat start)."""
        raw: dict[str, np.ndarray] = {}
        failed = []
        for utt in self.utterances.values():
            try:
                if utt.audio is None:
                    raise KdpipeError(f"utterance {utt.id}: no audio to compute MFCC from")
                wave = load_audio(utt.audio, self.mfcc.sample_rate, utt.start, utt.end, utt.id)
                raw[utt.id] = compute_mfcc(wave, self.mfcc)
            except KdpipeError as e:
                failed.append((utt.id, str(e)))
        speakers = {u: self.utterances[u].speaker for u in raw}
        self.feats = normalize(raw, speakers, self.mfcc)
        train = [self.feats[u] for u in self.feats if u in self.training]
        dim = self.mfcc.dim
        total = sum((x.sum(axis=0, dtype=np.float64) for x in train), np.zeros(dim))
        squares = sum(((x.astype(np.float64) ** 2).sum(axis=0) for x in train), np.zeros(dim))
        return failed, total, squares, sum(len(x) for x in train)

    # -- graphs and alignments ---------------------------------------------------------
    def compile(self, meta: dict[str, str], arrays: dict[str, np.ndarray]) -> list[tuple[str, str]]:
        """Training graphs of every utterance with features, for the model's tree."""
        model = GmmHmm.from_parts(meta, arrays)
        compiler = GraphCompiler(self.lang, model.tm, model.tree)
        topology, ids = model.topology_object(), self.lang.phone_ids
        lexicon = self.lang.lexicon
        self.graphs, failed = {}, []
        for utt in self.feats:
            # the fewest frames any pronunciation allows (silence is optional)
            need = sum(
                min(sum(topology.min_length(ids[p]) for p in pron) for pron in lexicon.prons[w])
                for w in self.words[utt]
            )
            if len(self.feats[utt]) < need:
                failed.append(
                    (
                        utt,
                        f"{len(self.feats[utt])} frames are too few for its "
                        f"transcript (its phones need at least {need})",
                    )
                )
                continue
            graph = compiler.compile(self.words[utt])
            if graph.num_states == 0:
                failed.append((utt, "its transcript gives an empty training graph"))
                continue
            self.graphs[utt] = graph
        return failed

    def equal_align(self) -> list[tuple[str, str]]:
        """Flat start: alignments spread evenly over each graph (training utterances)."""
        failed = []
        for utt in self.training & self.graphs.keys():
            ali = gmm.equal_alignment(self.graphs[utt], len(self.feats[utt]))
            if ali is None:
                failed.append(
                    (utt, f"{len(self.feats[utt])} frames are too few for its transcript")
                )
                continue
            self.alignments[utt] = ali
        return failed

    def step(
        self,
        meta: dict[str, str],
        arrays: dict[str, np.ndarray],
        *,
        realign: bool,
        accumulate: bool = True,
        boost_silence: float = 1.0,
        options: gmm.AlignOptions = gmm.AlignOptions(),  # noqa: B008 (frozen)
        which: str = "train",
    ) -> StepResult:
        """Realign (``which`` = ``train`` or ``all`` utterances) and/or accumulate the
        training utterances' statistics under the model."""
        model = GmmHmm.from_parts(meta, arrays)
        result = StepResult(stats=None)
        if realign:
            aligner = gmm.boosted(model, [self.lang.silence_id], boost_silence)
            utts = self.training if which == "train" else set(self.feats)
            for utt in sorted(utts & self.graphs.keys()):
                ali, retried, like = gmm.align(
                    aligner, utt, self.graphs[utt], self.feats[utt], options
                )
                result.retried += retried
                if ali is None:
                    self.alignments.pop(utt, None)
                    result.failed.append((utt, f"no alignment at beam {options.retry_beam}"))
                    continue
                self.alignments[utt] = ali
                result.log_like += like
                result.frames += len(ali)
        if accumulate:
            acc = gmm.Accumulator(model)
            for utt in sorted(self.training & self.alignments.keys()):
                acc.add(self.feats[utt], self.alignments[utt])
            result.stats = acc.stats()
        return result

    def get_alignments(self) -> dict[str, list[int]]:
        return dict(self.alignments)

    def set_alignments(self, alignments: dict[str, list[int]]) -> None:
        self.alignments = {u: a for u, a in alignments.items() if u in self.feats}

    def tree_stats(self, meta: dict[str, str], arrays: dict[str, np.ndarray]) -> TreeStats:
        """``acc-tree-stats``: the tree statistics of the training utterances' alignments
        under the (monophone) ``model``: each frame's phone, pdf class and contexts."""
        model = GmmHmm.from_parts(meta, arrays)
        tm = model.tm
        count = tm.num_transition_ids + 1
        phone_of, pdf_of = model.phone_of_transition, model.pdf_of_transition
        first_state = np.array(
            [False] + [tm.transition_ids_is_start_of_phone(t) for t in range(1, count)]
        )  # transition ids of a phone's first HMM state
        classes = model.topology_object().get_phone_to_num_pdf_classes()
        info = model.tree.get_pdf_info(phones=list(tm.phones), num_pdf_classes=list(classes))
        class_of_pdf = np.array([pairs[0][1] for pairs in info])  # monophone: one pair each
        parts = []
        for utt in sorted(self.training & self.alignments.keys()):
            ali = np.asarray(self.alignments[utt])  # (T,) transition ids
            phones, first = phone_of[ali], first_state[ali]  # (T,)
            # graphs are compiled with Kaldi's reordered self-loops, so a final transition
            # is not a phone's last frame: an instance starts where the phone changes or
            # where the first state is entered again from a later one
            starts = np.concatenate(
                [[True], (phones[1:] != phones[:-1]) | (first[1:] & ~first[:-1])]
            )
            parts.append(
                accumulate_tree_stats(self.feats[utt], phones, class_of_pdf[pdf_of[ali]], starts)
            )
        return TreeStats.total(parts) if parts else TreeStats.empty(self.mfcc.dim)


def _serve(conn: Connection, args: tuple[Any, ...]) -> None:
    """A worker process: build the share, then run the parent's calls until ``None``."""
    try:
        share = Share(*args)
        conn.send(("ok", None))
    except BaseException as e:  # reported to the parent, which raises it
        conn.send(("error", _describe(e)))
        return
    while True:
        msg = conn.recv()
        if msg is None:
            return
        name, a, kw = msg
        try:
            conn.send(("ok", getattr(share, name)(*a, **kw)))
        except BaseException as e:
            conn.send(("error", _describe(e)))


def _describe(e: BaseException) -> tuple[str, str, str]:
    return type(e).__name__, str(e), traceback.format_exc()


class JobError(KdpipeError):
    """A job failed; the message is the job's own error."""


class Jobs:
    """``n`` shares (in worker processes unless ``n == 1``) called in lockstep."""

    def __init__(self, shares: Sequence[tuple[Any, ...]]) -> None:
        self._local: Share | None = None
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        if len(shares) == 1:
            self._local = Share(*shares[0])
            return
        ctx = multiprocessing.get_context("spawn")
        for args in shares:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_serve, args=(child, args), daemon=True)
            proc.start()
            self._conns.append(parent)
            self._procs.append(proc)
        self._gather()

    def __len__(self) -> int:
        return 1 if self._local is not None else len(self._conns)

    def call(self, name: str, *args: Any, **kwargs: Any) -> list[Any]:
        """``share.name(*args, **kwargs)`` on every share, in parallel; results in order."""
        if self._local is not None:
            return [getattr(self._local, name)(*args, **kwargs)]
        for conn in self._conns:
            conn.send((name, args, kwargs))
        return self._gather()

    def _gather(self) -> list[Any]:
        out, error = [], None
        for conn in self._conns:
            try:
                status, value = conn.recv()
            except EOFError:
                status, value = "error", ("JobError", "an alignment job died", "")
            if status == "error" and error is None:
                error = value
            out.append(value)
        if error is not None:
            name, message, trace = error
            if name in _KNOWN:
                raise _KNOWN[name](message)
            raise JobError(f"an alignment job failed: {name}: {message}\n{trace}")
        return out

    def close(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(BrokenPipeError, OSError):
                conn.send(None)
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> Jobs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _known_errors() -> dict[str, type[BaseException]]:
    return {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, KdpipeError)
    }


_KNOWN = _known_errors()


def split_by_speaker(utterances: list[Utterance], n: int) -> list[list[Utterance]]:
    """``n`` shares of whole speakers with about equal utterance counts (largest first)."""
    by_speaker: dict[str, list[Utterance]] = {}
    for utt in utterances:
        by_speaker.setdefault(utt.speaker, []).append(utt)
    shares: list[list[Utterance]] = [[] for _ in range(max(1, n))]
    for _, utts in sorted(by_speaker.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        min(shares, key=len).extend(utts)
    return [s for s in shares if s] or [[]]
