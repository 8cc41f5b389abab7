"""Decoding speed and error rate as a function of the beam, for the phone loop and the
word graph.

For one frame-level checkpoint and a feature store: the model's test and dev posteriors
are computed once; the acoustic scale of each graph is tuned on dev at the default beam;
then, for each beam, the whole test split is decoded (one process, one thread, the model's
forward pass not timed). Reports the graph's size and build time, and per beam the
real-time factor per core (decode seconds / seconds of audio; the target is <= 1/20 for
the phone loop, i.e. at least 20x faster than real time) and the decoded error rate.
The word graph needs transcripts and a lexicon beside the corpus (``--lexicon`` else).

    python benchmarks/decode_speed.py --model exp/teacher --corpus data/feats/phones.zarr
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.lexicon import lexicon_beside, read_lexicon
from kdpipe.decode.hybrid import DecodeOptions
from kdpipe.decode.scoring import (
    RATE_NAMES,
    decoded_errors,
    phone_references,
    training_graph,
    training_word_graph,
    tune_scale,
    word_references,
)
from kdpipe.decode.word_graph import alignment_model_beside
from kdpipe.learn.data import LabelledData
from kdpipe.learn.evaluate import predict
from kdpipe.models import load_checkpoint

BEAMS = (4.0, 8.0, 13.0, 20.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--lexicon", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)  # per core
    store = FeatureStore.open(args.corpus)
    model, _ = load_checkpoint(args.model)
    test = LabelledData.from_store(store, args.split)
    dev = LabelledData.from_store(store, "dev")
    pred = predict(model, test, keep=True, keep_logp=True)
    tuned = predict(model, dev, keep=True, keep_logp=True)
    sub = int(getattr(model, "subsampling", 1))
    audio = sum(len(x) for x in pred.logp) * sub * store.config.frame_shift_ms / 1000
    labels = list(store.labels.names)
    print(f"{args.model} on {args.split}: {len(test.ids)} utterances, {audio:.0f} s of audio, "
          f"{len(labels)} labels, frame accuracy {100 * pred.accuracy:.1f}%")  # fmt: skip
    started = time.perf_counter()
    loop, log_prior = training_graph(store)
    graphs = [(loop, time.perf_counter() - started)]
    lexicon = args.lexicon or lexicon_beside(store.attrs.get("source", ""))
    if lexicon is not None and store.texts is not None:
        started = time.perf_counter()
        tree = alignment_model_beside(store.attrs.get("source", ""), labels)
        graph = training_word_graph(store, read_lexicon(Path(lexicon)), model=tree)
        graphs.append((graph, time.perf_counter() - started))
    for graph, build in graphs:
        name = RATE_NAMES[graph.unit]

        def refs(part: LabelledData, p: object, unit: str = graph.unit) -> list[list[str]]:
            if unit == "word":
                return word_references(store, part.ids)
            return phone_references(labels, p.ref)  # type: ignore[attr-defined]

        scale, _ = tune_scale(graph, log_prior, tuned.logp, refs(dev, tuned), dev.ids,
                              DecodeOptions())  # fmt: skip
        size = f"{graph.fst.num_states:,} states"  # type: ignore[attr-defined]
        print(f"\n{graph.kind}: {len(graph.symbols)} symbols, {size}, built in "
              f"{build:.1f} s; acoustic scale {scale:g} (tuned on dev)\n")  # fmt: skip
        print(f"| beam | decode s | RTF per core | x real time | decoded {name} (%) | not final |")
        print("|---:|---:|---:|---:|---:|---:|")
        for beam in BEAMS:
            opts = replace(DecodeOptions(beam=beam), acoustic_scale=scale)
            started = time.perf_counter()
            result = decoded_errors(graph, log_prior, pred.logp, refs(test, pred), test.ids, opts)
            seconds = time.perf_counter() - started
            rtf = seconds / audio
            print(f"| {beam:g} | {seconds:.2f} | {rtf:.4f} | {1 / rtf:,.0f} | "
                  f"{100 * result.rate:.1f} | {result.not_final} |")  # fmt: skip


if __name__ == "__main__":
    main()
