"""``realign_data``: realign an aligned corpus with a trained kdpipe frame model.

The hybrid loop: a network trained on a GMM-HMM alignment gives better labels than the
GMMs that made them. Its scores are Kaldi's pseudo-likelihoods, log p(s | x) - log p(s)
per tied state s (the priors p(s) counted from the training alignment it learnt from,
``prior_floor`` smoothing unseen states), times the acoustic scale, through the *same*
training graphs (tree, transition model and lexicon of the previous alignment) and the same
Viterbi aligner (``gmm.align_scores``).

Inputs: the previous ``align`` output (its ``align/final.safetensors``, ``lexicon.txt`` and
``labels.txt``), the feature store prepared from it (the network's inputs, with the CMVN
the network was trained with), and the network's checkpoint, whose label set must be the
previous alignment's tied states. The output directory has the same layout as
``align_data``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import torch

from kdpipe import __version__
from kdpipe.align.align_config import Scales
from kdpipe.align.aligner import AlignResult, phone_alignments
from kdpipe.align.data_dir import AlignSummary, _write
from kdpipe.align.gmm import AlignOptions, align_scores
from kdpipe.align.truth import agreement
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.lexicon import LexiconReport, read_lexicon
from kdpipe.corpus.priors import label_priors
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import AlignmentError, CorpusError
from kdpipe.hmm.lang import GraphCompiler, Lang
from kdpipe.hmm.model import GmmHmm
from kdpipe.labels import LabelSet
from kdpipe.models import load_checkpoint


def realign_data(
    previous: str | Path,
    corpus: str | Path,
    model: str | Path,
    out: str | Path,
    *,
    scales: Scales = Scales(),  # noqa: B008 (frozen)
    options: AlignOptions | None = None,
    skip_bad: bool = False,
    trust_custom_code: bool = False,
    reference: Mapping[str, np.ndarray] | None = None,
    log: Callable[[str], None] = lambda line: None,
) -> AlignSummary:
    """Realign the corpus of ``previous`` (an ``align`` output) with the network ``model``
    on the features of ``corpus`` (prepared from ``previous``) into ``out``."""
    started = time.perf_counter()
    previous, out = Path(previous), Path(out)
    gmm_file = previous / "align" / "final.safetensors"
    if not gmm_file.is_file():
        raise CorpusError(f"{previous}: not an aligned data dir (no align/final.safetensors)")
    hmm = GmmHmm.load(gmm_file)
    lexicon = read_lexicon(previous / "align" / "lexicon.txt")
    states = LabelSet.read(previous / "labels.txt")
    source = read_corpus(previous)
    store = FeatureStore.open(corpus)
    store.labels.check_same(states, f"corpus {store.location}", f"alignment {previous}")
    net, card = load_checkpoint(model, "cpu", trust_custom_code=trust_custom_code)
    card.check_compatible(
        store.labels,
        store.feature_fingerprint,
        f"corpus {store.location}",
        features=store.config,
        level="frame",
        name=f"model {model}",
    )
    if card.subsampling != 1:
        raise AlignmentError(
            f"model {model}: realignment needs one output per frame "
            f"(its subsampling is {card.subsampling})"
        )
    log_prior = np.log(label_priors(store))  # (C,)
    lang = Lang.from_lexicon(lexicon)
    compiler = GraphCompiler(lang, hmm.tm, hmm.tree)
    opts = options or AlignOptions(
        acoustic_scale=scales.acoustic,
        transition_scale=scales.transition,
        self_loop_scale=scales.self_loop,
    )
    by_id = {u.id: u for u in source.utterances}
    alignments: dict[str, list[int]] = {}
    failed: list[tuple[str, str]] = []
    with torch.inference_mode():
        for i, utt_id in enumerate(store.ids):
            utt = by_id.get(utt_id)
            if utt is None or utt.text is None:
                failed.append((utt_id, f"not in {previous} or without a transcript"))
                continue
            x = torch.from_numpy(np.ascontiguousarray(store.features(i)))[None]  # (1, T, F)
            logits, _ = net(x, torch.tensor([x.shape[1]]))  # (1, T, C)
            logp = torch.log_softmax(logits.float(), dim=-1)[0].numpy()  # (T, C)
            graph = compiler.compile(utt.text.split())
            ali, _, _ = align_scores(hmm, utt_id, graph, logp - log_prior, opts)
            if ali is None:
                failed.append((utt_id, f"no alignment at beam {opts.retry_beam}"))
                continue
            alignments[utt_id] = ali
    if failed and not skip_bad:
        first, reason = failed[0]
        raise AlignmentError(
            f"utterance {first}: {reason} ({len(failed)} utterances failed; "
            "rerun with --skip-bad to leave them out)"
        )
    final = None
    if reference is not None:
        final = agreement(phone_alignments(hmm, lang, alignments), reference).to_dict()
    seconds = time.perf_counter() - started
    result = AlignResult(hmm, lang, alignments, failed, [], seconds, final)
    aligned = [u for u in source.utterances if u.id in alignments]
    _write(out, source, aligned, result, lexicon, states.to_list())
    report = {
        "made_by": f"kdpipe {__version__} corpus align --model",
        "previous": str(previous),
        "corpus": str(corpus),
        "model": str(model),
        "model_weights_sha256": card.weights_sha256,
        "scales": vars(scales),
        "aligned": len(alignments),
        "skipped": [{"utterance": u, "reason": r} for u, r in failed],
        "agreement": final,
        "seconds": round(seconds, 1),
    }
    (out / "align" / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    words = sorted({w for u in aligned if u.text for w in u.text.split()})
    lex_report = LexiconReport(
        words=tuple(words), found=tuple(words), g2p=(), failed={}, language=None
    )
    return AlignSummary(str(out), len(alignments), failed, len(states), seconds, final, lex_report)
