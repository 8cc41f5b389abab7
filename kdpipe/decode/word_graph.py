"""A word graph: lexicon and word n-gram LM over a frame model's label units (for WER).

Kaldi's ``mkgraph.sh`` without the context step, built with kaldifst:

1. L, the lexicon FST with optional silence and disambiguation symbols
   (``kdpipe.hmm.lang.Lang``, the one alignment compiles its training graphs with), plus
   the ``#0:#0`` self-loop that lets G's backoff arcs through (``L_disambig.fst``);
2. G, the grammar: an ARPA LM through kaldilm (``kdpipe.decode.ngram``), the user's or a
   backoff bigram estimated from the training transcripts;
3. LG = L o G, determinized (``determinize_star``) and minimized (``minimize_encoded``),
   as ``mkgraph.sh`` does, while the disambiguation symbols keep it determinizable;
4. each phone arc of LG becomes the phone's HMM over the model's labels
   (``graph.expand_phones``); disambiguation symbols become epsilons.

The output symbols are the lang's words. Tied triphone states enter context-free (see
``kdpipe.decode.graph``): a looser graph than Kaldi's HCLG, the same one for every model
of a label set.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from kdpipe.corpus.lexicon import Lexicon
from kdpipe.decode.graph import DecodingGraph, expand_phones, phone_hmms
from kdpipe.decode.ngram import BOS, EOS, bigram_arpa, grammar_fst
from kdpipe.errors import ConfigError


def build_word_graph(
    labels: Sequence[str],
    lexicon: Lexicon,
    arpa: str | Path | None = None,
    sentences: Iterable[Sequence[str]] = (),
) -> DecodingGraph:
    """The word graph over ``labels`` for ``lexicon``'s words, with the LM in ARPA file
    ``arpa`` or (None) a bigram estimated from ``sentences`` (word lists)."""
    import kaldifst  # compiled extensions: loaded when a graph is built

    from kdpipe.hmm.lang import Lang

    hmms = phone_hmms(labels)
    missing = [phone for phone in lexicon.phones if phone not in hmms]
    if missing:
        raise ConfigError(
            f"word graph: the lexicon's phone {missing[0]!r} has no HMM among the model's "
            f"{len(labels)} labels ({len(missing)} phone(s) missing)"
        )
    lang = Lang.from_lexicon(lexicon)
    with tempfile.TemporaryDirectory(prefix="kdpipe-lm-") as tmp:
        if arpa is None:
            arpa = Path(tmp) / "bigram.arpa"
            arpa.write_text(bigram_arpa(sentences, lexicon.words), encoding="utf-8")
        grammar = grammar_fst(arpa, lang.words)
    lexicon_fst = lang.lexicon_fst()
    # G's backoff arcs read #0: let it pass through L (prepare_lang.sh's fstaddselfloops)
    kaldifst.add_self_loops(lexicon_fst, [lang.phone_ids["#0"]], [lang.word_ids["#0"]])
    kaldifst.arcsort(lexicon_fst, sort_type="olabel")
    kaldifst.arcsort(grammar, sort_type="ilabel")
    lg = kaldifst.compose(lexicon_fst, grammar)
    kaldifst.determinize_star(lg)
    kaldifst.minimize_encoded(lg)
    by_id = {i: hmms[phone] for i, phone in enumerate(lang.phones) if phone in hmms}
    fst = expand_phones(lg, by_id.get)
    return DecodingGraph(fst, lang.words[1:], "word", frozenset({"#0", BOS, EOS}))
