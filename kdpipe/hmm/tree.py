"""Triphone decision trees: Kaldi's tree building, the small part kaldi-hmm-gmm does not bind.

What Kaldi does
---------------
A context-dependent GMM-HMM ties its HMM states through a decision tree (Kaldi's
``ContextDependency``): an *event* is the phone window around a frame plus the pdf class
(the HMM state) it sits in, and the tree maps every event to a pdf id (a *senone*, one
GMM). For triphones the window has width N = 3 and central position P = 1, so an event is
{-1: pdf class, 0: left phone, 1: central phone, 2: right phone}; phone 0 in a context
position means "no phone" (the utterance edge). Kaldi builds the tree in four programs:

1. ``acc-tree-stats``: one diagonal Gaussian's sufficient statistics (count, sum x,
   sum x^2) per distinct event seen in the alignments, the contexts taken from the phone
   sequence;
2. ``cluster-phones``: top-down 2-means clustering of the phones on their pooled
   statistics (of pdf class 1 by default, the middle state of three); every cluster of the
   resulting binary tree is a *question*, a set of phones;
3. ``compile-questions``: the questions for each key (the context positions and, for roots
   that share the states of a phone, the pdf class);
4. ``build-tree``: one root per line of ``roots.txt`` (usually one per phone, "shared
   split": all its states in one root), then greedy splitting of the leaf whose best
   question gains the most log-likelihood of a one-Gaussian-per-leaf model, until
   ``--max-leaves`` leaves or no gain above ``--thresh`` (300); then merging leaves of one
   root that cost less than ``--cluster-thresh`` to merge, rounding to a multiple of 8, and
   numbering the leaves depth first (``RenumberEventMap``).

``gmm-init-model`` then gives each leaf one Gaussian from the tree statistics.

What this does
--------------
- trees in the terms of ``kdpipe.hmm.event_map`` (Kaldi's event maps, written and read in
  Kaldi's binary and text forms, handed to kaldi-hmm-gmm);
- statistics from ``kdpipe.hmm.tree_stats`` (``acc-tree-stats``);
- ``build_tree``: questions by 2-means clustering of the phones (``cluster-phones``), then
  greedy likelihood-gain splitting (``build-tree``), vectorised with numpy: the context
  values are laid out in the phone clusters' order, so a question is a run of positions
  and its "yes" statistics in a leaf are a difference of cumulative sums, every question
  at once (20k events, D = 39, 2000 leaves: about 2 s on one core); ``TreeInfo`` gives
  each leaf's count, root and Gaussian (``gmm-init-model``).

Where it differs from Kaldi
---------------------------
- Roots: one per (phone, pdf class) ("not-shared split" in ``roots.txt`` terms), so no
  questions on the pdf class; the silence phones get one leaf per state and are never
  split on context ("not-shared not-split"; Kaldi's recipes split silence too). Their
  statistics keep their contexts; Kaldi's ``--ci-phones`` would zero them.
- Questions: 2-means on each phone's middle state (pdf class ``n // 2`` of ``n``: 1 of 3,
  as Kaldi's default), from a deterministic start (farthest means) refined by moving one
  phone at a time while the likelihood rises, where Kaldi's k-means starts at random.
  Added: {0}, {0} + silence and silence, so the tree can ask about the utterance edge
  (Kaldi puts phone 0 in no question: an edge always answers "no").
- Stopping: ``num_leaves`` (Kaldi's ``--max-leaves``), ``min_gain`` (Kaldi's ``--thresh``,
  0 here so that the leaf count decides) and ``min_count`` frames on both sides of a split
  (Kaldi's build-tree has no such floor). No merging after splitting and no rounding to a
  multiple of 8, so the tree has exactly min(``num_leaves``, what ``min_count`` and
  ``min_gain`` allow) leaves, at least one per (phone, pdf class).
- A (phone, pdf class) with no statistics still gets its leaf (count 0, the global
  Gaussian); Kaldi warns and ``gmm-init-model`` leaves it untrained.

Every event over ``phones`` (and 0 at the edges) maps to a leaf: questions are sets of
phones, so a context never seen in training takes the "no" branch.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import numpy as np

from kdpipe.errors import ConfigError
from kdpipe.hmm.event_map import PDF_CLASS, Constant, EventMap, KaldiTree, Split, Table
from kdpipe.hmm.tree_stats import TreeStats

LEFT, CENTRAL, RIGHT = 0, 1, 2  # the keys of a triphone event: positions in the window
WIDTH, CENTRAL_POSITION = 3, 1  # triphones: Kaldi's N and P
VAR_FLOOR = 0.01  # Kaldi's acc-tree-stats --var-floor
_LOG_2PI = math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------
# Building the tree (cluster-phones + build-tree + gmm-init-model)


@dataclass(frozen=True, eq=False)
class TreeInfo:
    """What ``build_tree`` made: per leaf (pdf id) its statistics and root, the likelihoods
    and the questions it could ask."""

    tree: KaldiTree
    counts: np.ndarray  # (L,) float64: frames per leaf; 0 for a (phone, pdf class) never seen
    root_phones: np.ndarray  # (L,) int32: the central phone of the leaf's root
    root_pdf_classes: np.ndarray  # (L,) int32: the pdf class of the leaf's root
    means: np.ndarray  # (L, D) float64: the leaf's Gaussian (the global one where count is 0)
    variances: np.ndarray  # (L, D) float64, floored at var_floor
    log_likelihood_roots: float  # one Gaussian per (phone, pdf class)
    log_likelihood_leaves: float  # one Gaussian per leaf
    questions: tuple[tuple[int, ...], ...]  # the phone sets asked of left and right contexts

    @property
    def num_leaves(self) -> int:
        return int(self.counts.shape[0])

    @property
    def gain(self) -> float:
        """The log-likelihood the splits gained."""
        return self.log_likelihood_leaves - self.log_likelihood_roots

    @property
    def gain_per_frame(self) -> float:
        return self.gain / max(float(self.counts.sum()), 1.0)


def build_tree(
    stats: TreeStats,
    *,
    phones: Sequence[int],
    num_pdf_classes: Mapping[int, int],
    silence: Sequence[int],
    num_leaves: int,
    min_count: float = 100.0,
    min_gain: float = 0.0,
    var_floor: float = VAR_FLOOR,
) -> tuple[khg.ContextDependency, TreeInfo]:
    """A triphone tree (N = 3, P = 1) with up to ``num_leaves`` leaves, pdf ids 0..L-1.

    ``phones``: every phone id (>= 1) the tree must answer for, ``num_pdf_classes`` of each
    (its topology's), ``silence`` among them (one leaf per state, no context). A split
    needs ``min_count`` frames on both sides (HTK's RO: a leaf worth a Gaussian) and a gain
    above ``min_gain`` (Kaldi's ``--thresh``; 0: ``num_leaves`` decides)."""
    phone_list = sorted({int(p) for p in phones})
    silent = {int(p) for p in silence}
    _check_build_args(stats, phone_list, num_pdf_classes, silent, num_leaves, var_floor)
    roots = [(p, k) for p in phone_list for k in range(int(num_pdf_classes[p]))]
    if num_leaves < len(roots):
        raise ConfigError(f"tree: num_leaves {num_leaves} < {len(roots)} (phone, pdf class) roots")
    dim = stats.dim
    num_values = phone_list[-1] + 1  # context values 0..max phone
    # packed statistics per event: count, sum x, sum x^2, 1 (counts events on a side)
    packed = np.concatenate(
        [stats.counts[:, None], stats.sums, stats.sums_sq, np.ones((stats.num_events, 1))],
        axis=1,
    )  # (E, 2D + 2)
    first_root = np.zeros(num_values, np.int64)  # root index of (phone, pdf class 0)
    for index, (phone, pdf_class) in enumerate(roots):
        if pdf_class == 0:
            first_root[phone] = index
    event_roots = first_root[stats.events[:, 1]] + stats.events[:, 3]  # (E,)

    questions, order = _questions(stats, packed, phone_list, num_pdf_classes, silent, var_floor)
    splitter = _Splitter(
        stats.events, packed, questions, order, num_values, dim, min_count, min_gain, var_floor
    )
    event_order = np.argsort(event_roots, kind="stable")
    bounds = np.searchsorted(event_roots[event_order], np.arange(len(roots) + 1))
    for index, (phone, _) in enumerate(roots):
        splitter.add_root(event_order[bounds[index] : bounds[index + 1]], phone not in silent)
    splitter.grow(num_leaves)
    return _assemble(splitter, roots, phone_list, packed, dim, var_floor, questions)


def _check_build_args(
    stats: TreeStats,
    phones: list[int],
    num_pdf_classes: Mapping[int, int],
    silence: set[int],
    num_leaves: int,
    var_floor: float,
) -> None:
    if not phones or phones[0] < 1:
        raise ConfigError("tree: phones are ids >= 1 (0 is the utterance edge), at least one")
    missing = [p for p in phones if int(num_pdf_classes.get(p, 0)) < 1]
    if missing:
        raise ConfigError(f"tree: no pdf classes for phones {missing}")
    if not silence <= set(phones):
        raise ConfigError(f"tree: silence phones {sorted(silence - set(phones))} not in phones")
    if num_leaves < 1 or var_floor <= 0:
        raise ConfigError("tree: num_leaves >= 1 and var_floor > 0")
    events = stats.events
    known = np.zeros(phones[-1] + 2, bool)
    known[phones] = True  # context 0 (edge) allowed; index -1 = phone out of range
    classes = np.zeros(phones[-1] + 2, np.int64)
    classes[phones] = [int(num_pdf_classes[p]) for p in phones]

    def ids(column: np.ndarray) -> np.ndarray:
        return np.where((column >= 0) & (column <= phones[-1]), column, -1)

    central = ids(events[:, 1])
    bad_central = ~known[central] | (events[:, 3] < 0) | (events[:, 3] >= classes[central])
    bad_context = (~known[ids(events[:, 0])] & (events[:, 0] != 0)) | (
        ~known[ids(events[:, 2])] & (events[:, 2] != 0)
    )
    if np.any(bad_central | bad_context):
        row = events[np.flatnonzero(bad_central | bad_context)[0]].tolist()
        raise ConfigError(
            f"tree: stats hold event {row} (left, central, right, pdf class) outside "
            "the phones and their pdf classes"
        )


def _log_likelihood(packed: np.ndarray, dim: int, var_floor: float) -> np.ndarray:
    """Kaldi's ``GaussClusterable::Objf``: the log-likelihood of the frames under their own
    diagonal Gaussian, variance floored; 0 for no frames. packed (..., 2D + 1 or more)."""
    counts = packed[..., 0]  # (...)
    safe = np.where(counts > 0, counts, 1.0)[..., None]  # (..., 1)
    mean = packed[..., 1 : 1 + dim] / safe  # (..., D)
    var = packed[..., 1 + dim : 1 + 2 * dim] / safe - mean * mean  # (..., D)
    floored = np.maximum(var, var_floor)  # (..., D)
    per_frame = -0.5 * (
        np.sum(var / floored, axis=-1) + np.sum(np.log(floored), axis=-1) + dim * _LOG_2PI
    )  # (...)
    return np.where(counts > 0, counts * per_frame, 0.0)


def _questions(
    stats: TreeStats,
    packed: np.ndarray,
    phones: list[int],
    num_pdf_classes: Mapping[int, int],
    silence: set[int],
    var_floor: float,
) -> tuple[tuple[tuple[int, ...], ...], list[int]]:
    """Kaldi's cluster-phones: every cluster of a top-down 2-means tree of the phones on
    their middle state's statistics, then {0}, {0} + silence and silence; and the phones in
    the order of the clusters' tree (each cluster a contiguous run, depth first)."""
    events = stats.events
    middle = np.zeros(phones[-1] + 1, np.int64)
    middle[phones] = [int(num_pdf_classes[p]) // 2 for p in phones]
    rows = events[:, 3] == middle[events[:, 1]]  # (E,) events of a middle state
    per_phone = np.zeros((phones[-1] + 1, packed.shape[1]))  # (V, C)
    np.add.at(per_phone, events[rows, 1], packed[rows])
    seen = np.array([p for p in phones if per_phone[p, 0] > 0], np.int64)
    found: list[tuple[int, ...]] = []
    order = seen.tolist()
    pending = [seen] if len(seen) > 1 else []
    while pending:
        members = pending.pop()
        in_first = _two_means(per_phone[members], stats.dim, var_floor)
        first, second = members[in_first], members[~in_first]
        at = order.index(int(members[0]))  # members are contiguous in order
        order[at : at + len(members)] = [*first.tolist(), *second.tolist()]
        for part in (first, second):
            found.append(tuple(int(p) for p in part))
            if len(part) > 1:
                pending.append(part)
    if len(seen) == 1:
        found.append((int(seen[0]),))
    sil = tuple(sorted(silence))
    found.extend([(0,), (0, *sil), sil])
    unique: dict[tuple[int, ...], None] = dict.fromkeys(q for q in found if q)
    return tuple(unique), order


def _two_means(rows: np.ndarray, dim: int, var_floor: float) -> np.ndarray:
    """Two clusters of the phones' statistics ``rows`` (P >= 2, C) that locally maximise the
    log-likelihood of one Gaussian per cluster: returns (P,) bool, the first cluster."""
    num = rows.shape[0]
    counts = rows[:, :1]  # (P, 1)
    means = rows[:, 1 : 1 + dim] / counts  # (P, D)
    pooled = rows.sum(axis=0)
    pooled_mean = pooled[1 : 1 + dim] / pooled[0]
    pooled_var = np.maximum(pooled[1 + dim : 1 + 2 * dim] / pooled[0] - pooled_mean**2, var_floor)
    z = (means - pooled_mean) / np.sqrt(pooled_var)  # (P, D) standardised means
    a = int(np.argmax(np.sum(z * z, axis=1)))
    to_a = np.sum((z - z[a]) ** 2, axis=1)  # (P,)
    b = int(np.argmax(to_a)) if to_a.max() > 0 else (a + 1) % num  # equal phones: any other
    in_first = to_a <= np.sum((z - z[b]) ** 2, axis=1)
    in_first[a], in_first[b] = True, False
    for _ in range(4 * num):  # each move raises the likelihood; a few passes converge
        first, second = rows[in_first].sum(axis=0), rows[~in_first].sum(axis=0)
        here = np.where(in_first[:, None], first, second)  # (P, C) each phone's own cluster
        there = np.where(in_first[:, None], second, first)  # (P, C) the other cluster
        change = (
            _log_likelihood(here - rows, dim, var_floor)
            + _log_likelihood(there + rows, dim, var_floor)
            - _log_likelihood(here, dim, var_floor)
            - _log_likelihood(there, dim, var_floor)
        )  # (P,) likelihood change of moving each phone
        sizes = np.where(in_first, in_first.sum(), num - in_first.sum())
        change[sizes == 1] = -np.inf  # a cluster keeps one phone at least
        best = int(np.argmax(change))
        if change[best] <= 1e-9 * abs(float(_log_likelihood(pooled, dim, var_floor))):
            break
        in_first[best] = ~in_first[best]
    return in_first


class _Splitter:
    """Greedy splitting (Kaldi's SplitDecisionTree): nodes 0..n-1, each a leaf (its events)
    or a split (key, question, yes node, no node); a heap of the leaves' best splits."""

    def __init__(
        self,
        events: np.ndarray,
        packed: np.ndarray,
        questions: tuple[tuple[int, ...], ...],
        order: list[int],
        num_values: int,
        dim: int,
        min_count: float,
        min_gain: float,
        var_floor: float,
    ) -> None:
        self.events, self.packed, self.dim, self.var_floor = events, packed, dim, var_floor
        self.min_count, self.min_gain = min_count, min_gain
        self.membership = np.zeros((len(questions), num_values), bool)  # (Q, V): in the set?
        for q, values in enumerate(questions):
            self.membership[q, list(values)] = True
        # Context values laid out edge first, then the phones in cluster order: a question
        # is a few runs of positions (mostly one), and its "yes" statistics are differences
        # of cumulative sums over a leaf's events sorted by position (no matrix products:
        # BLAS on several threads runs products this small far slower than on one).
        rest = [v for v in range(num_values) if v != 0 and v not in set(order)]
        self.position = np.argsort(np.asarray([0, *order, *rest]))  # (V,) value -> position
        runs: list[tuple[int, int, int]] = []  # (question, first position, end position)
        for q, values in enumerate(questions):
            positions = np.sort(self.position[list(values)])
            breaks = np.flatnonzero(np.diff(positions) != 1) + 1
            for run in np.split(positions, breaks):
                runs.append((q, int(run[0]), int(run[-1]) + 1))
        run_array = np.asarray(runs, np.int64).reshape(-1, 3)
        self.run_starts, self.run_ends = run_array[:, 1], run_array[:, 2]  # (R,)
        # the runs in layers, the j-th run of each question in layer j: layer 0 gives every
        # question its first run, the others add theirs (no question twice in a layer)
        run_questions = run_array[:, 0]  # (R,) sorted
        first = np.searchsorted(run_questions, np.arange(len(questions)))  # (Q,)
        rank = np.arange(len(runs)) - first[run_questions]  # (R,) j of each run
        self.run_layers = [np.flatnonzero(rank == j) for j in range(int(rank.max()) + 1)]
        self.run_layer_questions = [run_questions[layer] for layer in self.run_layers]
        self.node_events: list[np.ndarray] = []  # per node: its events (rows of stats)
        self.node_splits: list[tuple[int, int, int, int] | None] = []  # key, q, yes, no
        self.roots: list[int] = []
        self.heap: list[tuple[float, int, int, int]] = []  # (-gain, node, key, question)
        self.num_leaves = 0

    def new_node(self, rows: np.ndarray, may_split: bool) -> int:
        node = len(self.node_events)
        self.node_events.append(rows)
        self.node_splits.append(None)
        self.num_leaves += 1
        if may_split:
            best = self.best_split(rows)
            if best is not None:
                heapq.heappush(self.heap, (-best[0], node, best[1], best[2]))
        return node

    def add_root(self, rows: np.ndarray, may_split: bool) -> None:
        self.roots.append(self.new_node(rows, may_split))

    def best_split(self, rows: np.ndarray) -> tuple[float, int, int] | None:
        """(gain, key, question) of the best allowed split of a leaf's events, or None."""
        if len(rows) < 2:
            return None
        stats = self.packed[rows]  # (k, C)
        total = stats.sum(axis=0)  # (C,)
        yes = np.concatenate([self.yes_stats(rows, stats, key) for key in (LEFT, RIGHT)])
        # (2Q, C): the "yes" side of every question on the left, then the right context
        no = total - yes  # (2Q, C)
        allowed = np.flatnonzero(
            (yes[:, -1] > 0.5)
            & (no[:, -1] > 0.5)
            & (yes[:, 0] >= self.min_count)
            & (no[:, 0] >= self.min_count)
        )  # (A,) questions that split the leaf and keep min_count on both sides
        if len(allowed) == 0:
            return None
        sides = _log_likelihood(
            np.concatenate([yes[allowed], no[allowed]]), self.dim, self.var_floor
        )  # (2A,)
        parent = float(_log_likelihood(total, self.dim, self.var_floor))
        gains = sides[: len(allowed)] + sides[len(allowed) :] - parent  # (A,)
        best = int(np.argmax(gains))
        if not gains[best] > self.min_gain:
            return None
        key, question = divmod(int(allowed[best]), len(self.membership))
        return float(gains[best]), (LEFT, RIGHT)[key], question

    def yes_stats(self, rows: np.ndarray, stats: np.ndarray, key: int) -> np.ndarray:
        """(Q, C): statistics of a leaf's events (``rows``, their ``stats``) whose value for
        ``key`` each question answers "yes"."""
        positions = self.position[self.events[rows, key]]  # (k,)
        order = np.argsort(positions, kind="stable")  # (k,)
        below = np.zeros((len(rows) + 1, stats.shape[1]))  # (k + 1, C): sums of the first i
        np.cumsum(stats[order], axis=0, out=below[1:])
        sorted_positions = positions[order]
        runs = (
            below[np.searchsorted(sorted_positions, self.run_ends)]
            - below[np.searchsorted(sorted_positions, self.run_starts)]
        )  # (R, C)
        yes = runs[self.run_layers[0]]  # (Q, C)
        for layer, questions in zip(self.run_layers[1:], self.run_layer_questions[1:], strict=True):
            yes[questions] += runs[layer]
        return yes

    def grow(self, num_leaves: int) -> None:
        while self.heap and self.num_leaves < num_leaves:
            _, node, key, q = heapq.heappop(self.heap)
            rows = self.node_events[node]
            in_yes = self.membership[q, self.events[rows, key]]  # (k,)
            self.num_leaves -= 1
            yes = self.new_node(rows[in_yes], True)
            no = self.new_node(rows[~in_yes], True)
            self.node_splits[node] = (key, q, yes, no)


def _assemble(
    splitter: _Splitter,
    roots: list[tuple[int, int]],
    phones: list[int],
    packed: np.ndarray,
    dim: int,
    var_floor: float,
    questions: tuple[tuple[int, ...], ...],
) -> tuple[khg.ContextDependency, TreeInfo]:
    """Leaves numbered depth first in root order (Kaldi's RenumberEventMap), the event map
    (central phone -> pdf class -> the root's splits), and each leaf's Gaussian."""
    splits = splitter.node_splits
    leaf_of: dict[int, int] = {}
    leaf_root: list[int] = []
    for root_index, root in enumerate(splitter.roots):
        stack = [root]
        while stack:
            node = stack.pop()
            split = splits[node]
            if split is None:
                leaf_of[node] = len(leaf_of)
                leaf_root.append(root_index)
            else:
                stack.extend((split[3], split[2]))
    maps: dict[int, EventMap] = {}
    for node in reversed(range(len(splits))):  # children come after their parents
        split = splits[node]
        if split is None:
            maps[node] = Constant(leaf_of[node])
        else:
            key, q, yes, no = split
            maps[node] = Split(key, questions[q], maps.pop(yes), maps.pop(no))
    by_phone: dict[int, list[EventMap | None]] = {p: [] for p in phones}
    for (phone, _), root in zip(roots, splitter.roots, strict=True):
        by_phone[phone].append(maps[root])
    to_pdf = Table(
        CENTRAL,
        tuple(
            Table(PDF_CLASS, tuple(by_phone[p])) if p in by_phone else None
            for p in range(phones[-1] + 1)
        ),
    )
    tree = KaldiTree(WIDTH, CENTRAL_POSITION, to_pdf)

    num = len(leaf_of)
    leaf_stats = np.zeros((num, packed.shape[1]))  # (L, C)
    for node, leaf in leaf_of.items():
        leaf_stats[leaf] = packed[splitter.node_events[node]].sum(axis=0)
    root_stats = np.zeros((len(roots), packed.shape[1]))  # (R, C)
    np.add.at(root_stats, np.asarray(leaf_root, np.int64), leaf_stats)
    counts = leaf_stats[:, 0]  # (L,)
    pooled = leaf_stats.sum(axis=0)
    stats = np.where(counts[:, None] > 0, leaf_stats, pooled)  # (L, C): global where unseen
    stat_counts = np.maximum(stats[:, :1], 1e-10)  # (L, 1)
    means = stats[:, 1 : 1 + dim] / stat_counts  # (L, D)
    variances = np.maximum(stats[:, 1 + dim : 1 + 2 * dim] / stat_counts - means**2, var_floor)
    if pooled[0] == 0:
        means, variances = np.zeros((num, dim)), np.ones((num, dim))
    root_array = np.asarray(roots, np.int32).reshape(-1, 2)[np.asarray(leaf_root, np.int64)]
    info = TreeInfo(
        tree=tree,
        counts=counts.astype(np.float64),
        root_phones=root_array[:, 0].copy(),
        root_pdf_classes=root_array[:, 1].copy(),
        means=means,
        variances=variances,
        log_likelihood_roots=float(_log_likelihood(root_stats, dim, var_floor).sum()),
        log_likelihood_leaves=float(_log_likelihood(leaf_stats, dim, var_floor).sum()),
        questions=questions,
    )
    return tree.to_khg(), info
