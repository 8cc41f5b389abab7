"""Word n-gram language models for the word graph: an ARPA file read, or a bigram estimated.

- ``bigram_arpa``: a backoff bigram in ARPA text from training transcripts, by
  interpolated absolute discounting (Ney's discount ``D = n1 / (n1 + 2 n2)`` from the
  counts of bigrams seen once and twice) with an add-one unigram over the whole
  vocabulary, so that a lexicon word never seen in training can still be decoded.
  kaldilm and Kaldi read ARPA but estimate nothing (Kaldi's recipes call SRILM or
  kaldi_lm's scripts); this is the smallest estimator that gives the graph a proper
  backoff LM.
- ``arpa_words``: the unigram words of an ARPA file, checked against the lexicon before
  kaldilm reads it (an unknown word stops Kaldi's ``arpa2fst`` outright).
- ``grammar_fst``: an ARPA file through kaldilm's ``arpa2fst`` into G (words in and out,
  ``#0`` on the backoff arcs, ``<s>`` and ``</s>`` as epsilons), on the lang's word table.
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from kdpipe.errors import ConfigError

BOS, EOS = "<s>", "</s>"
NEVER = -99.0  # ARPA's log10 probability of a word that never comes (``<s>`` as a unigram)


def bigram_arpa(sentences: Iterable[Sequence[str]], vocabulary: Iterable[str]) -> str:
    """A backoff bigram over ``vocabulary`` (plus ``<s>``, ``</s>``) from ``sentences``,
    as ARPA text; words of a sentence outside the vocabulary raise ``ConfigError``."""
    vocab = sorted(set(vocabulary))
    known = set(vocab)
    unigrams: Counter[str] = Counter()
    bigrams: Counter[tuple[str, str]] = Counter()
    for sentence in sentences:
        outside = [w for w in sentence if w not in known]
        if outside:
            raise ConfigError(f"LM: training word {outside[0]!r} is not in the lexicon")
        tokens = [BOS, *sentence, EOS]
        unigrams.update(tokens[1:])
        bigrams.update(itertools.pairwise(tokens))
    targets = [*vocab, EOS]
    total = sum(unigrams.values())
    p1 = {w: (unigrams[w] + 1) / (total + len(targets)) for w in targets}  # add-one
    once = sum(1 for c in bigrams.values() if c == 1)
    twice = sum(1 for c in bigrams.values() if c == 2)
    discount = min(max(once / (once + 2 * twice), 0.1), 0.9) if once else 0.5
    history_count: Counter[str] = Counter()
    followers: dict[str, list[str]] = {}
    for (h, w), c in bigrams.items():
        history_count[h] += c
        followers.setdefault(h, []).append(w)
    # interpolated: p(w | h) = (c(h, w) - D) / c(h) + b(h) p1(w) for seen w, where
    # b(h) = D |followers(h)| / c(h) is exactly the backoff weight of h in ARPA form
    backoff = {h: discount * len(ws) / history_count[h] for h, ws in followers.items()}
    lines = ["\\data\\", f"ngram 1={len(targets) + 1}", f"ngram 2={len(bigrams)}", "",
             "\\1-grams:", f"{NEVER} {BOS} {_log10(backoff.get(BOS, 1.0)):.6f}"]  # fmt: skip
    for w in targets:
        tail = f" {_log10(backoff[w]):.6f}" if w in backoff else ""
        lines.append(f"{_log10(p1[w]):.6f} {w}{tail}")
    lines += ["", "\\2-grams:"]
    for (h, w), c in sorted(bigrams.items()):
        p2 = (c - discount) / history_count[h] + backoff[h] * p1[w]
        lines.append(f"{_log10(p2):.6f} {h} {w}")
    return "\n".join([*lines, "", "\\end\\", ""])


def arpa_words(path: str | Path) -> set[str]:
    """The words of an ARPA file's unigram section (``ConfigError`` if it has none)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"LM not found: {p}")
    words: set[str] = set()
    section = None
    try:
        with open(p, encoding="utf-8") as arpa:
            for line in arpa:
                line = line.strip()
                if line.startswith("\\"):
                    section = line
                    continue
                if section == "\\1-grams:" and line:
                    fields = line.split()
                    if len(fields) < 2:
                        raise ConfigError(f"{p}: not an ARPA unigram line: {line[:60]!r}")
                    words.add(fields[1])
    except UnicodeDecodeError:
        raise ConfigError(f"{p}: not UTF-8 text (an ARPA file is)") from None
    if not words:
        raise ConfigError(f"{p}: not an ARPA file (no \\1-grams: section)")
    return words


def grammar_fst(arpa: str | Path, words: Sequence[str]) -> object:
    """G from ARPA file ``arpa`` over word table ``words`` (id -> word; ``<eps>``, ``#0``,
    ``<s>``, ``</s>`` among them), through kaldilm; its words must all be in the table."""
    import kaldifst  # a compiled extension: loaded when a graph is built

    outside = sorted(arpa_words(arpa) - set(words) - {BOS, EOS})
    if outside:
        raise ConfigError(
            f"LM {arpa}: {len(outside)} word(s) not in the lexicon, e.g. {outside[0]!r}"
        )
    with tempfile.TemporaryDirectory(prefix="kdpipe-g-") as tmp:
        table = Path(tmp) / "words.txt"
        table.write_text("".join(f"{w} {i}\n" for i, w in enumerate(words)), encoding="utf-8")
        out = Path(tmp) / "G.fst"
        # in a child process: Kaldi's parser aborts the process on a malformed file, and
        # logs every section it reads to fd 2
        call = f"import kaldilm; kaldilm.arpa2fst(input_arpa={str(arpa)!r}, " \
            f"output_fst={str(out)!r}, disambig_symbol='#0', " \
            f"read_symbol_table={str(table)!r}, max_arpa_warnings=0)"  # fmt: skip
        done = subprocess.run([sys.executable, "-c", call], capture_output=True, text=True)
        if done.returncode != 0 or not out.is_file():
            said = [line for line in done.stderr.splitlines() if line.strip()]
            errors = [line for line in said if "[E]" in line or "ERROR" in line]
            why = (errors or said or [f"exit status {done.returncode}"])[-1].strip()
            raise ConfigError(f"LM {arpa}: kaldilm cannot read it: {why[:200]}")
        return kaldifst.StdVectorFst.read(str(out))


def _log10(p: float) -> float:
    return math.log10(p) if p > 0 else NEVER
