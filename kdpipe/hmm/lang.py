"""The "lang" of an alignment: phone and word symbol tables and the lexicon FST L.

What Kaldi's ``utils/prepare_lang.sh`` makes, built in memory with kaldifst from a
``Lexicon``:

- phones: ``<eps>`` = 0, the silence phone = 1, the non-silence phones from 2 in the
  lexicon's order, then the disambiguation symbols ``#0``, ``#1``, ... (``#1`` and up tell
  apart words whose pronunciations are equal or prefixes of others, as
  ``add_lex_disambig.pl`` does; ``#0`` is what a grammar's backoff would use);
- words: ``<eps>`` = 0, the words sorted, then ``#0``, ``<s>``, ``</s>``;
- L: optional silence between words and at the start (``silence_prob``, Kaldi's 0.5),
  each pronunciation's phones in, the word out on its first arc.

Unlike Kaldi's default, phones are position-independent (no ``_B``/``_I``/``_E``/``_S``
variants): kdpipe's labels name phones, and a tree on 56 phones needs no 4x more roots.
Training graphs (``compile``) go through Kaldi's own ``TrainingGraphCompiler``, which
composes L with the transcript, the context-dependency and the HMMs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import kaldi_hmm_gmm as khg
import kaldifst

from kdpipe.corpus.lexicon import Lexicon
from kdpipe.errors import CorpusError

EPS = "<eps>"


@dataclass(frozen=True)
class Lang:
    """Symbol tables and disambiguated pronunciations of one lexicon."""

    lexicon: Lexicon
    phones: tuple[str, ...]  # id -> phone symbol (0 = <eps>, 1 = silence, then #0, #1, ...)
    words: tuple[str, ...]  # id -> word symbol
    entries: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]  # word, pron, disambig
    silence_prob: float = 0.5  # Kaldi's default: silence as likely as not between words

    @classmethod
    def from_lexicon(cls, lexicon: Lexicon, silence_prob: float = 0.5) -> Lang:
        if not 0.0 < silence_prob < 1.0:
            raise CorpusError(f"silence_prob must be in (0, 1), got {silence_prob}")
        entries, max_disambig = _disambiguate(lexicon)
        phones = (
            EPS,
            lexicon.silence,
            *lexicon.nonsilence_phones,
            *(f"#{i}" for i in range(max_disambig + 1)),
        )
        words = (EPS, *lexicon.words, "#0", "<s>", "</s>")
        return cls(lexicon, phones, words, tuple(entries), silence_prob)

    @property
    def phone_ids(self) -> dict[str, int]:
        return {p: i for i, p in enumerate(self.phones)}

    @property
    def word_ids(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self.words)}

    @property
    def silence_id(self) -> int:
        return 1

    @property
    def nonsilence_ids(self) -> list[int]:
        return list(range(2, 2 + len(self.lexicon.nonsilence_phones)))

    @property
    def disambig_ids(self) -> list[int]:
        return [i for i, p in enumerate(self.phones) if p.startswith("#")]

    def lexicon_fst(self) -> kaldifst.StdVectorFst:
        """L: phones (with disambiguation symbols) in, words out, optional silence."""
        ids, wids = self.phone_ids, self.word_ids
        sil_cost, no_sil_cost = -math.log(self.silence_prob), -math.log(1 - self.silence_prob)
        fst = kaldifst.StdVectorFst()
        start, loop, sil = fst.add_state(), fst.add_state(), fst.add_state()
        fst.start = start
        fst.set_final(state=loop, weight=0.0)

        def arc(src: int, dst: int, phone: int, word: int, cost: float) -> None:
            fst.add_arc(
                state=src,
                arc=kaldifst.StdArc(ilabel=phone, olabel=word, weight=cost, nextstate=dst),
            )

        arc(start, loop, 0, 0, no_sil_cost)
        arc(start, sil, 0, 0, sil_cost)
        arc(sil, loop, self.silence_id, 0, 0.0)
        for word, pron, disambig in self.entries:
            symbols = [ids[p] for p in (*pron, *disambig)]
            src = loop
            for j, phone in enumerate(symbols[:-1]):
                nxt = fst.add_state()
                arc(src, nxt, phone, wids[word] if j == 0 else 0, 0.0)
                src = nxt
            out = wids[word] if len(symbols) == 1 else 0
            arc(src, loop, symbols[-1], out, no_sil_cost)
            arc(src, sil, symbols[-1], out, sil_cost)
        kaldifst.arcsort(fst, sort_type="olabel")
        return fst

    def graph_compiler(
        self, transition_model: khg.TransitionModel, tree: khg.ContextDependency
    ) -> GraphCompiler:
        return GraphCompiler(self, transition_model, tree)


class GraphCompiler:
    """Training graphs (transcript -> HCLG-like FST over transition ids) for one model."""

    def __init__(
        self, lang: Lang, transition_model: khg.TransitionModel, tree: khg.ContextDependency
    ) -> None:
        self.lang = lang
        self._word_ids = lang.word_ids
        opts = khg.TrainingGraphCompilerOptions()
        # as compile-train-graphs: no transition probabilities in the graph (they change
        # every pass; the aligner adds the current ones, gmm.align)
        opts.transition_scale, opts.self_loop_scale = 0.0, 0.0
        self._compiler = khg.TrainingGraphCompiler(
            trans_model=transition_model,
            ctx_dep=tree,
            lex_fst=lang.lexicon_fst(),
            disambig_syms=lang.disambig_ids,
            opts=opts,
        )

    def compile(self, words: list[str]) -> kaldifst.StdVectorFst:
        """The training graph of a transcript (its words must be in the lexicon)."""
        return self._compiler.compile_graph_from_text([self._word_ids[w] for w in words])


def _disambiguate(
    lexicon: Lexicon,
) -> tuple[list[tuple[str, tuple[str, ...], tuple[str, ...]]], int]:
    """Each pronunciation with the disambiguation symbols ``add_lex_disambig.pl`` gives it:
    a pronunciation that another word shares, or that is a prefix of another, gets
    ``#1``, ``#2``, ... (numbered per pronunciation); returns them and the largest used."""
    entries = [(w, pron) for w in lexicon.words for pron in lexicon.prons[w]]
    count: dict[tuple[str, ...], int] = {}
    prefixes: set[tuple[str, ...]] = set()
    for _, pron in entries:
        count[pron] = count.get(pron, 0) + 1
        prefixes.update(pron[:k] for k in range(1, len(pron)))
    last: dict[tuple[str, ...], int] = {}
    out: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []
    for word, pron in entries:
        if count[pron] == 1 and pron not in prefixes:
            out.append((word, pron, ()))
            continue
        last[pron] = last.get(pron, 0) + 1
        out.append((word, pron, (f"#{last[pron]}",)))
    return out, max(last.values(), default=0)
