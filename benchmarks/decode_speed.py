"""Phone-loop decoding speed and error rate as a function of the beam.

For one frame-level checkpoint and a feature store: the model's test posteriors are
computed once; then, for each beam, the whole split is decoded (one thread, the model's
forward pass not timed) at the acoustic scale tuned on dev at the default beam. Reports
the real-time factor per core (decode seconds / seconds of audio; the target is <= 1/20,
i.e. at least 20x faster than real time) and the decoded PER for each beam.

    python benchmarks/decode_speed.py --model exp/teacher --corpus data/feats/phones.zarr
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.decode.hybrid import DecodeOptions
from kdpipe.decode.scoring import decoded_per, training_graph, tune_scale
from kdpipe.learn.data import LabelledData
from kdpipe.learn.evaluate import predict
from kdpipe.models import load_checkpoint

BEAMS = (4.0, 8.0, 13.0, 20.0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    torch.set_num_threads(1)  # per core
    store = FeatureStore.open(args.corpus)
    model, _ = load_checkpoint(args.model)
    loop, log_prior = training_graph(store)
    test = LabelledData.from_store(store, args.split)
    dev = LabelledData.from_store(store, "dev")
    pred = predict(model, test, keep=True, keep_logp=True)
    tuned = predict(model, dev, keep=True, keep_logp=True)
    scale, _ = tune_scale(loop, log_prior, tuned.logp, tuned.ref, dev.ids, DecodeOptions())
    sub = int(getattr(model, "subsampling", 1))
    audio = sum(len(x) for x in pred.logp) * sub * store.config.frame_shift_ms / 1000
    what = f"{len(loop.phones)} phones, {len(store.labels)} labels; acoustic scale {scale:g}"
    print(f"{args.model} on {args.split}: {len(test.ids)} utterances, {audio:.0f} s, {what}")
    print("| beam | decode s | RTF per core | x real time | decoded PER (%) | not final |")
    print("|---:|---:|---:|---:|---:|---:|")
    for beam in BEAMS:
        opts = replace(DecodeOptions(beam=beam), acoustic_scale=scale)
        started = time.perf_counter()
        result = decoded_per(loop, log_prior, pred.logp, pred.ref, test.ids, opts)
        seconds = time.perf_counter() - started
        rtf = seconds / audio
        print(f"| {beam:g} | {seconds:.2f} | {rtf:.4f} | {1 / rtf:,.0f} | "
              f"{100 * result.per:.1f} | {result.not_final} |")  # fmt: skip


if __name__ == "__main__":
    main()
