"""A word graph: lexicon and word n-gram LM over a frame model's label units (for WER).

Kaldi's ``mkgraph.sh``, built with kaldifst and kaldi-hmm-gmm:

1. L, the lexicon FST with optional silence and disambiguation symbols
   (``kdpipe.hmm.lang.Lang``, the one alignment compiles its training graphs with), plus
   the ``#0:#0`` self-loop that lets G's backoff arcs through (``L_disambig.fst``);
2. G, the grammar: an ARPA LM through kaldilm (``kdpipe.decode.ngram``), the user's or a
   backoff bigram estimated from the training transcripts;
3. LG = L o G, determinized (``determinize_star``) and minimized (``minimize_encoded``),
   while the disambiguation symbols keep it determinizable;
4. the acoustic units, one of two ways:

   - **with the alignment's tree** (``model``: the GMM-HMM of ``kdpipe corpus align``,
     whose tied states are the model's labels in pdf order): Kaldi's own steps, C o LG
     (``compose_context``, triphone windows), H from the tree and transition model
     (``get_h_transducer``), H o CLG determinized, the disambiguation symbols removed,
     minimized, self-loops added (``add_self_loops``, self-loop scale 0.1, transition
     scale 1.0, as ``mkgraph.sh``); the input transition ids then become pdf + 1, the
     symbols every decoding graph here reads (``kdpipe.decode.graph``);
   - **context-free** (any other label set): every phone arc of LG becomes the phone's HMM
     over the labels (``graph.expand_phones``), disambiguation symbols epsilons: tied
     states whose tree is not at hand enter whatever their context.

The output symbols are the lang's words.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kdpipe.corpus.lexicon import Lexicon
from kdpipe.decode.graph import DecodingGraph, copy_states, expand_phones, phone_hmms
from kdpipe.decode.ngram import BOS, EOS, bigram_arpa, grammar_fst
from kdpipe.errors import ConfigError

if TYPE_CHECKING:
    from kdpipe.hmm.lang import Lang
    from kdpipe.hmm.model import GmmHmm

SELF_LOOP_SCALE = 0.1  # mkgraph.sh's --self-loop-scale
TRANSITION_SCALE = 1.0  # mkgraph.sh's --transition-scale


def build_word_graph(
    labels: Sequence[str],
    lexicon: Lexicon,
    arpa: str | Path | None = None,
    sentences: Iterable[Sequence[str]] = (),
    model: GmmHmm | None = None,
) -> DecodingGraph:
    """The word graph over ``labels`` for ``lexicon``'s words, with the LM in ARPA file
    ``arpa`` or (None) a bigram estimated from ``sentences`` (word lists); through the tree
    of ``model`` when given (its pdfs are ``labels``), context-free otherwise."""
    from kdpipe.hmm.lang import Lang  # compiled extensions: loaded when a graph is built

    lang = Lang.from_lexicon(lexicon)
    if model is not None:
        if model.num_pdfs != len(labels):
            raise ConfigError(
                f"word graph: the alignment's tree has {model.num_pdfs} tied states, the "
                f"model {len(labels)} labels"
            )
        fst, kind = _hclg(lang, _lg(lang, arpa, sentences), model), "HCLG (alignment tree)"
    else:
        hmms = phone_hmms(labels)
        missing = [phone for phone in lexicon.phones if phone not in hmms]
        if missing:
            raise ConfigError(
                f"word graph: the lexicon's phone {missing[0]!r} has no HMM among the "
                f"model's {len(labels)} labels ({len(missing)} phone(s) missing)"
            )
        by_id = {i: hmms[phone] for i, phone in enumerate(lang.phones) if phone in hmms}
        fst, kind = expand_phones(_lg(lang, arpa, sentences), by_id.get), "L o G, context-free"
    return DecodingGraph(fst, lang.words[1:], "word", frozenset({"#0", BOS, EOS}), kind)


def alignment_model_beside(source: str | Path, labels: Sequence[str]) -> GmmHmm | None:
    """The GMM-HMM of ``kdpipe corpus align`` that made a corpus folder's labels
    (``align/final.safetensors``, its tied states named in ``labels.txt``), when the
    folder is one and ``labels`` are its tied states in pdf order; None otherwise."""
    from kdpipe.hmm.model import GmmHmm

    if not str(source) or "://" in str(source):
        return None
    folder = Path(source)
    names = folder / "labels.txt"
    if not (folder / "align" / "final.safetensors").is_file() or not names.is_file():
        return None
    if names.read_text(encoding="utf-8").split() != list(labels):
        return None
    return GmmHmm.load(folder / "align" / "final.safetensors")


def _lg(lang: Lang, arpa: str | Path | None, sentences: Iterable[Sequence[str]]) -> Any:
    """det(min(L o G)), phones (with disambiguation symbols) in, words out."""
    import kaldifst

    with tempfile.TemporaryDirectory(prefix="kdpipe-lm-") as tmp:
        if arpa is None:
            arpa = Path(tmp) / "bigram.arpa"
            arpa.write_text(bigram_arpa(sentences, lang.lexicon.words), encoding="utf-8")
        grammar = grammar_fst(arpa, lang.words)
    lexicon_fst = lang.lexicon_fst()
    # G's backoff arcs read #0: let it pass through L (prepare_lang.sh's fstaddselfloops)
    kaldifst.add_self_loops(lexicon_fst, [lang.phone_ids["#0"]], [lang.word_ids["#0"]])
    kaldifst.arcsort(lexicon_fst, sort_type="olabel")
    kaldifst.arcsort(grammar, sort_type="ilabel")
    lg = kaldifst.compose(lexicon_fst, grammar)
    kaldifst.determinize_star(lg)
    kaldifst.minimize_encoded(lg)
    return lg


def _hclg(lang: Lang, lg: Any, model: GmmHmm) -> Any:
    """HCLG over pdf + 1 from LG and the tree and transition model of ``model``."""
    import kaldi_hmm_gmm as khg
    import kaldifst

    kaldifst.arcsort(lg, sort_type="ilabel")
    width, central = model.tree.context_width, model.tree.central_position
    clg, ilabels = kaldifst.compose_context(lang.disambig_ids, width, central, lg)
    kaldifst.arcsort(clg, sort_type="ilabel")
    config = khg.HTransducerConfig()
    config.transition_scale = TRANSITION_SCALE
    h, disambig_tids = khg.get_h_transducer(ilabels, model.tree, model.tm, config)
    hclg = kaldifst.compose(h, clg)
    kaldifst.determinize_star(hclg)
    hclg = _relabel(hclg, {t: 0 for t in disambig_tids})  # fstrmsymbols
    kaldifst.minimize_encoded(hclg)
    hclg = khg.add_self_loops(self_loop_scale=SELF_LOOP_SCALE, disambig_syms=[], reorder=True,
                              trans_model=model.tm, ifst=hclg)  # fmt: skip
    pdf_of = model.pdf_of_transition  # transition id -> pdf
    return _relabel(hclg, {t: int(pdf_of[t]) + 1 for t in range(1, len(pdf_of))})


def _relabel(fst: Any, inputs: dict[int, int]) -> Any:
    """A copy of ``fst`` with input symbols mapped by ``inputs`` (others kept)."""
    import kaldifst

    out = copy_states(fst)
    for state in kaldifst.StateIterator(fst):
        for arc in kaldifst.ArcIterator(fst, state):
            label = inputs.get(arc.ilabel, arc.ilabel)
            out.add_arc(state, kaldifst.StdArc(label, arc.olabel, arc.weight.value, arc.nextstate))
    return out
