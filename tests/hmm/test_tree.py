"""kdpipe.hmm.tree: Kaldi's event maps in Python, tree statistics, and the triphone tree
builder, checked against kaldi-hmm-gmm's own ContextDependency, TransitionModel and
TrainingGraphCompiler."""

from __future__ import annotations

import itertools
import time

import kaldi_hmm_gmm as khg
import kaldifst
import numpy as np
import pytest

from kdpipe.errors import AlignmentError, ConfigError, ModelError
from kdpipe.hmm.event_map import (
    PDF_CLASS,
    Constant,
    KaldiTree,
    Split,
    Table,
    answers,
    context_dependency,
    kaldi_binary,
    lookup,
)
from kdpipe.hmm.tree import LEFT, RIGHT, build_tree
from kdpipe.hmm.tree_stats import TreeStats, accumulate_tree_stats

SILENCE = [1]
PHONES = [1, 2, 3, 4, 5, 6]
NUM_PDF_CLASSES = {p: 5 if p in SILENCE else 3 for p in PHONES}
GROUP_A, GROUP_B = (2, 4), (3, 5, 6)  # phones whose means are close (a question to find)


def topology(phones: list[int], silence: list[int]) -> khg.HmmTopology:
    """3 emitting left-to-right states for non-silence phones, 5 for silence."""

    def entry(for_phones: list[int], num_states: int) -> str:
        states = "".join(
            f"<State> {i} <PdfClass> {i} <Transition> {i} 0.75 <Transition> {i + 1} 0.25 </State> "
            for i in range(num_states)
        )
        ids = " ".join(map(str, for_phones))
        return (
            f"<TopologyEntry> <ForPhones> {ids} </ForPhones> {states}"
            f"<State> {num_states} </State> </TopologyEntry> "
        )

    speech = [p for p in phones if p not in silence]
    text = f"<Topology> {entry(speech, 3)}{entry(silence, 5)}</Topology>"
    topo = khg.HmmTopology()
    topo.read(text)
    return topo


def all_events(phones: list[int], num_pdf_classes: dict[int, int]):
    """Every (left, central, right, pdf class) over ``phones``, 0 at the edges."""
    contexts = [0, *phones]
    for left, central, right in itertools.product(contexts, phones, contexts):
        for pdf_class in range(num_pdf_classes[central]):
            yield left, central, right, pdf_class


def base_means(dim: int, rng: np.random.Generator) -> np.ndarray:
    """(phone, pdf class) -> mean: phones of GROUP_A near each other, GROUP_B likewise."""
    means = rng.normal(0.0, 0.3, size=(max(PHONES) + 1, 5, dim))
    means[list(GROUP_A), :, 0] += 6.0
    means[list(GROUP_B), :, 0] -= 6.0
    means[SILENCE, :, 1] += 15.0
    return means


def effect(left: int, central: int, right: int, pdf_class: int) -> float:
    """The context effects of the analytic data: a shift of every dimension's mean."""
    if central == 3 and right in GROUP_A:  # all states of phone 3: the right context
        return 4.0
    if central == 5 and pdf_class == 2 and left in GROUP_A:  # one state: the left context
        return -4.0
    if central == 6 and pdf_class == 0 and right == 0:  # the utterance edge
        return 4.0
    if central in SILENCE and pdf_class == 0 and right in GROUP_A:  # silence: never split
        return 4.0
    return 0.0


def expected_group(left: int, central: int, right: int, pdf_class: int) -> int:
    """Which side of the true split an event is on (0 where its root has no effect)."""
    if central in SILENCE:
        return 0
    return int(effect(left, central, right, pdf_class) != 0.0)


def analytic_stats(dim: int = 3, count: float = 200.0) -> TreeStats:
    """Exact Gaussian statistics (variance 1) of every event: splits without a context
    effect gain nothing."""
    rng = np.random.default_rng(1)
    means = base_means(dim, rng)
    events = np.array(list(all_events(PHONES, NUM_PDF_CLASSES)), np.int32)
    mean = (
        means[events[:, 1], events[:, 3]]
        + np.array([effect(*map(int, e)) for e in events])[:, None]
    )  # (E, D)
    counts = np.full(len(events), count)
    return TreeStats(events, counts, counts[:, None] * mean, counts[:, None] * (1.0 + mean**2))


def sampled_stats(rng: np.random.Generator, num_utterances: int = 150, dim: int = 3) -> TreeStats:
    """Statistics of random utterances (silence at the edges, random phones between),
    frames from Gaussians: phone 3's middle state shifts by 3 before phones of GROUP_A."""
    means = base_means(dim, np.random.default_rng(1))
    speech = [p for p in PHONES if p not in SILENCE]
    parts = []
    for _ in range(num_utterances):
        sequence = [1, *rng.choice(speech, size=rng.integers(3, 9)).tolist(), 1]
        phones, pdf_classes, starts, mean_rows = [], [], [], []
        for i, phone in enumerate(sequence):
            right = sequence[i + 1] if i + 1 < len(sequence) else 0
            for pdf_class in range(NUM_PDF_CLASSES[phone]):
                frames = int(rng.integers(2, 6))
                shift = 3.0 if (phone == 3 and pdf_class == 1 and right in GROUP_A) else 0.0
                phones += [phone] * frames
                pdf_classes += [pdf_class] * frames
                starts += [pdf_class == 0] + [False] * (frames - 1)
                mean_rows += [means[phone, pdf_class] + shift] * frames
        features = np.asarray(mean_rows) + rng.normal(size=(len(mean_rows), dim))
        parts.append(
            accumulate_tree_stats(
                features.astype(np.float32),
                np.asarray(phones),
                np.asarray(pdf_classes),
                np.asarray(starts),
            )
        )
    return TreeStats.total(parts)


def leaves_by_root(info) -> dict[tuple[int, int], int]:
    roots = zip(info.root_phones.tolist(), info.root_pdf_classes.tolist(), strict=True)
    found: dict[tuple[int, int], int] = {}
    for root in roots:
        found[root] = found.get(root, 0) + 1
    return found


# --- event maps and their Kaldi forms ---------------------------------------------------


@pytest.mark.parametrize(
    "tree",
    [
        khg.monophone_context_dependency(phones=[1, 2, 3], phone2num_pdf_classes=[0, 3, 3, 5]),
        khg.monophone_context_dependency(phones=[2, 5], phone2num_pdf_classes=[0, 0, 1, 0, 0, 3]),
        khg.monophone_context_dependency_shared(
            phone_classes=[[1], [2, 3]], phone2num_pdf_classes=[0, 5, 3, 3]
        ),
    ],
)
def test_khg_monophone_trees_round_trip_byte_identically(tree):
    model = KaldiTree.from_khg(tree)
    assert model.to_kaldi_binary() == kaldi_binary(tree)
    assert model.to_kaldi_text() == str(tree)
    again = context_dependency(model.width, model.central, model.to_pdf)
    assert kaldi_binary(again) == kaldi_binary(tree)
    assert model.num_pdfs == tree.num_pdfs


def test_split_maps_read_and_written_as_kaldi_does():
    to_pdf = Table(
        1,
        (
            None,
            Table(PDF_CLASS, (Split(LEFT, (2, 1), Constant(0), Constant(1)), Constant(2))),
            Table(
                PDF_CLASS,
                (Split(RIGHT, (0,), Split(LEFT, (), Constant(3), Constant(4)), Constant(5)),),
            ),
        ),
    )
    model = KaldiTree(3, 1, to_pdf)
    tree = model.to_khg()
    assert str(tree) == model.to_kaldi_text()  # Kaldi's own text writer, SE included
    assert KaldiTree.from_khg(tree) == model
    assert tree.num_pdfs == model.num_pdfs == 6
    for left, central, right, pdf_class in all_events([1, 2], {1: 2, 2: 1}):
        found, pdf = tree.compute([left, central, right], pdf_class)
        assert found and pdf == model.compute([left, central, right], pdf_class)
    assert lookup(to_pdf, {1: 7, PDF_CLASS: 0, 0: 0, 2: 0}) is None  # past the table
    assert tree.compute([0, 7, 0], 0) == (False, -1)


def test_bad_binary_is_a_model_error():
    data = kaldi_binary(khg.monophone_context_dependency(phones=[1], phone2num_pdf_classes=[0, 3]))
    for broken in (data[:-5], data + b"x", data.replace(b"TE ", b"XE ", 1)):
        with pytest.raises(ModelError):
            KaldiTree.from_kaldi_binary(broken)


# --- statistics ---------------------------------------------------------------------------


def test_stats_take_contexts_from_the_phone_sequence():
    features = np.arange(14, dtype=np.float32).reshape(7, 2)
    phones = np.array([1, 1, 2, 2, 2, 2, 1])  # instances: 1, 2, 2 (a new one), 1
    starts = np.array([True, False, True, False, True, False, True])
    pdf_classes = np.array([0, 1, 0, 1, 0, 1, 0])
    stats = accumulate_tree_stats(features, phones, pdf_classes, starts)
    assert stats.events.tolist() == [
        [0, 1, 2, 0],
        [0, 1, 2, 1],
        [1, 2, 2, 0],
        [1, 2, 2, 1],
        [2, 1, 0, 0],
        [2, 2, 1, 0],
        [2, 2, 1, 1],
    ]
    assert stats.counts.tolist() == [1.0] * 7
    assert stats.sums[2].tolist() == [4.0, 5.0]
    assert stats.sums_sq[2].tolist() == [16.0, 25.0]


def test_stats_sum_across_utterances_in_any_order(rng):
    one, two = sampled_stats(rng, 3), sampled_stats(rng, 4)
    total, other = one + two, TreeStats.total([two, one])
    for name, array in total.as_arrays().items():
        np.testing.assert_allclose(array, other.as_arrays()[name])
    assert total.num_frames == one.num_frames + two.num_frames
    assert len({tuple(e) for e in total.events.tolist()}) == total.num_events
    again = TreeStats.from_arrays(total.as_arrays())
    np.testing.assert_array_equal(again.sums_sq, total.sums_sq)


def test_bad_frame_info_is_an_alignment_error():
    features = np.zeros((3, 2), np.float32)
    with pytest.raises(AlignmentError, match="inside a phone"):
        accumulate_tree_stats(features, np.array([1, 2, 2]), np.zeros(3), np.array([1, 0, 0]))
    with pytest.raises(AlignmentError, match="first frame"):
        accumulate_tree_stats(features, np.array([1, 1, 1]), np.zeros(3), np.array([0, 0, 0]))
    with pytest.raises(AlignmentError, match="frames"):
        accumulate_tree_stats(features, np.array([1, 1]), np.zeros(3), np.array([1, 0, 0]))


# --- building -------------------------------------------------------------------------------


def build(stats: TreeStats, **options):
    settings = {
        "phones": PHONES,
        "num_pdf_classes": NUM_PDF_CLASSES,
        "silence": SILENCE,
        "num_leaves": 1000,
        **options,
    }
    return build_tree(stats, **settings)


def test_tree_splits_where_the_data_says_and_nowhere_else():
    tree, info = build(analytic_stats(), min_gain=1.0)
    assert GROUP_A in info.questions
    roots = sum(NUM_PDF_CLASSES.values())
    assert info.num_leaves == tree.num_pdfs == roots + 5  # 3 states of 3, one of 5, one of 6
    by_root = leaves_by_root(info)
    assert by_root[(5, 2)] == by_root[(6, 0)] == 2
    assert all(by_root[(3, k)] == 2 for k in range(3))
    assert sum(by_root.values()) - roots == 5
    # the leaves split exactly the events whose means differ, in every root
    for root in by_root:
        pdfs: dict[int, set[int]] = {}
        for event in all_events(PHONES, NUM_PDF_CLASSES):
            if (event[1], event[3]) == root:
                found, pdf = tree.compute(list(event[:3]), event[3])
                assert found
                pdfs.setdefault(expected_group(*event), set()).add(pdf)
        assert all(len(group) == 1 for group in pdfs.values()), root
        assert len(set().union(*pdfs.values())) == len(pdfs), root
    assert info.gain > 0
    assert answers(info.tree.to_pdf) == list(range(info.num_leaves))  # numbered depth first


def test_phones_with_equal_statistics_still_cluster_down_to_single_phones():
    events = np.array(list(all_events(PHONES, NUM_PDF_CLASSES)), np.int32)
    counts = np.full(len(events), 50.0)
    sums = np.ones((len(events), 2)) * counts[:, None]
    stats = TreeStats(events, counts, sums, 2.0 * sums)
    _, info = build(stats, min_gain=1e-6)  # every split gains 0 (up to rounding)
    assert {(p,) for p in PHONES} <= set(info.questions)
    assert info.num_leaves == sum(NUM_PDF_CLASSES.values())


def test_greedy_splits_take_the_real_context_effect_first(rng):
    stats = sampled_stats(rng)
    roots = sum(NUM_PDF_CLASSES.values())
    tree, info = build(stats, num_leaves=roots + 1, min_count=20.0)
    assert leaves_by_root(info)[(3, 1)] == 2
    before = {tree.compute([0, 3, r], 1)[1] for r in GROUP_A}
    after = {tree.compute([0, 3, r], 1)[1] for r in (0, *GROUP_B, *SILENCE)}
    assert len(before) == len(after) == 1 and before != after


def test_compute_agrees_with_the_python_model_on_every_event(rng):
    tree, info = build(sampled_stats(rng), min_count=10.0)
    pdfs = set()
    for left, central, right, pdf_class in all_events(PHONES, NUM_PDF_CLASSES):
        found, pdf = tree.compute([left, central, right], pdf_class)
        assert found
        assert pdf == info.tree.compute([left, central, right], pdf_class)
        assert info.root_phones[pdf] == central and info.root_pdf_classes[pdf] == pdf_class
        pdfs.add(pdf)
    assert pdfs == set(range(info.num_leaves))
    assert KaldiTree.from_khg(tree) == info.tree


def test_leaves_are_as_many_as_min_count_allows(rng):
    stats = sampled_stats(rng)
    min_count = 40.0
    tree, info = build(stats, num_leaves=100_000, min_count=min_count)
    most = info.num_leaves
    assert most > sum(NUM_PDF_CLASSES.values())
    # every leaf of a split root keeps min_count, and no question could split one further
    pdf_of = np.array([tree.compute(e[:3].tolist(), int(e[3]))[1] for e in stats.events])
    split_roots = {r for r, n in leaves_by_root(info).items() if n > 1}
    for leaf in range(most):
        rows = pdf_of == leaf
        count = stats.counts[rows].sum()
        np.testing.assert_allclose(count, info.counts[leaf])
        root = (int(info.root_phones[leaf]), int(info.root_pdf_classes[leaf]))
        if root in split_roots:
            assert count >= min_count
        if root[0] in SILENCE:
            continue
        for key, question in itertools.product((LEFT, RIGHT), info.questions):
            yes = np.isin(stats.events[rows, key], question)
            small = min(stats.counts[rows][yes].sum(), stats.counts[rows][~yes].sum())
            assert small < min_count, (leaf, key, question)
    fewer = build(stats, num_leaves=most - 3, min_count=min_count)[1]
    assert fewer.num_leaves == most - 3
    assert build(stats, num_leaves=most + 5, min_count=min_count)[1].num_leaves == most


def test_leaf_gaussians_are_the_leaf_statistics(rng):
    stats = sampled_stats(rng)
    tree, info = build(stats, num_leaves=40, min_count=20.0)
    pdf_of = np.array([tree.compute(e[:3].tolist(), int(e[3]))[1] for e in stats.events])
    for leaf in (0, 7, info.num_leaves - 1):
        rows = pdf_of == leaf
        count = stats.counts[rows].sum()
        mean = stats.sums[rows].sum(axis=0) / count
        var = stats.sums_sq[rows].sum(axis=0) / count - mean**2
        np.testing.assert_allclose(info.means[leaf], mean)
        np.testing.assert_allclose(info.variances[leaf], np.maximum(var, 0.01))
    assert info.log_likelihood_leaves >= info.log_likelihood_roots


def test_unseen_phones_still_get_a_leaf_per_state(rng):
    stats = sampled_stats(rng, 20)
    phones = [*PHONES, 7]
    classes = {**NUM_PDF_CLASSES, 7: 3}
    tree, info = build_tree(
        stats, phones=phones, num_pdf_classes=classes, silence=SILENCE, num_leaves=60
    )
    for left, central, right, pdf_class in all_events(phones, classes):
        assert tree.compute([left, central, right], pdf_class)[0]
    unseen = info.root_phones == 7
    assert unseen.sum() == 3 and np.all(info.counts[unseen] == 0)
    assert np.all(np.isfinite(info.means)) and np.all(info.variances > 0)


def test_bad_build_arguments_are_config_errors(rng):
    stats = sampled_stats(rng, 5)
    with pytest.raises(ConfigError, match="roots"):
        build(stats, num_leaves=5)
    with pytest.raises(ConfigError, match="outside"):
        build(stats, phones=[1, 2, 3])
    with pytest.raises(ConfigError, match="silence"):
        build(stats, silence=[9])


# --- with kaldi-hmm-gmm -------------------------------------------------------------------


def test_transition_model_and_training_graph_use_the_tree(rng):
    tree, info = build(sampled_stats(rng), min_count=20.0)
    transitions = khg.TransitionModel(ctx_dep=tree, hmm_topo=topology(PHONES, SILENCE))
    assert transitions.num_pdfs == info.num_leaves

    lexicon = kaldifst.StdVectorFst()  # one "word" per phone, word id = phone id
    state = lexicon.add_state()
    lexicon.start = state
    lexicon.set_final(state=state, weight=0.0)
    for phone in PHONES:
        arc = kaldifst.StdArc(ilabel=phone, olabel=phone, weight=0.0, nextstate=state)
        lexicon.add_arc(state=state, arc=arc)
    kaldifst.arcsort(lexicon, sort_type="olabel")
    compiler = khg.TrainingGraphCompiler(
        trans_model=transitions,
        ctx_dep=tree,
        lex_fst=lexicon,
        disambig_syms=[],
        opts=khg.TrainingGraphCompilerOptions(),
    )
    sequence = [1, 3, 2, 5, 3, 4, 1]
    graph = compiler.compile_graph_from_text(sequence)
    assert graph.num_states > 0
    seen = set()
    for node in range(graph.num_states):
        for arc in kaldifst.ArcIterator(graph, node):
            if arc.ilabel:
                seen.add(transitions.transition_id_to_pdf(arc.ilabel))
    padded = [0, *sequence, 0]
    expected = {
        tree.compute(padded[i - 1 : i + 2], pdf_class)[1]
        for i in range(1, len(padded) - 1)
        for pdf_class in range(NUM_PDF_CLASSES[padded[i]])
    }
    assert seen == expected


@pytest.mark.slow
def test_a_realistic_tree_builds_in_seconds():
    """~20k events, 56 phones, D = 39, 2000 leaves (a medium corpus's triphone tree)."""
    rng = np.random.default_rng(0)
    dim, num_phones = 39, 56
    phones = list(range(1, num_phones + 1))
    classes = {p: 5 if p == 1 else 3 for p in phones}
    kinds = rng.integers(0, 8, size=num_phones + 1)  # phone classes that shape contexts
    state_means = rng.normal(0.0, 3.0, size=(num_phones + 1, 5, dim))
    kind_effects = rng.normal(0.0, 1.0, size=(8, dim))
    rows = set()
    for central in phones:
        for pdf_class in range(classes[central]):
            contexts = rng.integers(0, num_phones + 1, size=(120, 2))
            rows.update((int(left), central, int(right), pdf_class) for left, right in contexts)
    events = np.array(sorted(rows), np.int32)
    counts = np.ceil(rng.lognormal(3.5, 1.0, len(events)))
    mean = (
        state_means[events[:, 1], events[:, 3]]
        + 0.5 * kind_effects[kinds[events[:, 0]]]
        + kind_effects[kinds[events[:, 2]]]
        + rng.normal(0.0, 0.2, size=(len(events), dim))
    )  # (E, D)
    var = rng.uniform(0.5, 2.0, size=(len(events), dim))
    stats = TreeStats(events, counts, counts[:, None] * mean, counts[:, None] * (var + mean**2))
    assert stats.num_events > 19_000
    start = time.perf_counter()
    tree, info = build_tree(
        stats, phones=phones, num_pdf_classes=classes, silence=[1], num_leaves=2000
    )
    seconds = time.perf_counter() - start
    assert info.num_leaves == tree.num_pdfs == 2000
    assert seconds < 60.0, seconds  # about 2 s on one core
    transitions = khg.TransitionModel(ctx_dep=tree, hmm_topo=topology(phones, [1]))
    assert transitions.num_pdfs == 2000
    for event in rng.integers(0, num_phones + 1, size=(200, 3)):
        central = max(int(event[1]), 1)
        window = [int(event[0]), central, int(event[2])]
        for pdf_class in range(classes[central]):
            found, pdf = tree.compute(window, pdf_class)
            assert found and pdf == info.tree.compute(window, pdf_class)
