"""Training throughput per built-in model: frames/s of forward + backward + AdamW step.

All models run side by side in one process on the same padded batches (one-second clips
for utterance-level models, 2-3 s sentences for frame-level ones), one thread, after a
warm-up step; the ratio column is relative to the DNN so machine noise cancels out.

    python benchmarks/train_throughput.py [--steps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from kdpipe.models import build_model

F, C_FRAME, C_CLIP = 40, 56, 35  # mel bins; phone-task and keyword-task label sets
FRAME = {  # the configs of pipelines/baselines, plus the defaults of the other models
    "dnn": {"hidden_dim": 256, "num_layers": 3, "dropout": 0.2},
    "tdnn": {},
    "lstm": {"hidden_dim": 128, "num_layers": 3},
    "blstm": {"hidden_dim": 128, "num_layers": 3, "dropout": 0.2},
}
CLIP = {
    "cnn": {"channels": [32, 64, 64], "dropout": 0.2},
    "dnn_pool": {"hidden_dim": 64, "num_layers": 2},
    "lstm_pool": {},
}


def batch(level: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if level == "frame":
        lengths = torch.randint(200, 301, (64,), generator=g)  # (B,) 2-3 s sentences
        y = torch.randint(0, C_FRAME, (64, 300), generator=g)  # (B, T)
    else:
        lengths = torch.full((192,), 98)  # (B,) one-second clips
        y = torch.randint(0, C_CLIP, (192,), generator=g)  # (B,)
    x = torch.randn(len(lengths), int(lengths.max()), F, generator=g)  # (B, T, F)
    return x, lengths, y


def measure(name: str, config: dict, level: str, steps: int) -> tuple[int, float]:
    torch.manual_seed(0)
    classes = C_FRAME if level == "frame" else C_CLIP
    model = build_model(name, F, classes, config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, lengths, y = batch(level)
    frames = int(lengths.sum())
    total = 0.0
    for step in range(steps + 1):
        t0 = time.perf_counter()
        logits, _ = model(x, lengths)  # (B, T', C) or (B, C)
        target = y[:, : logits.shape[1]] if level == "frame" else y
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, classes), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step:  # the first step warms up allocators and kernels
            total += time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return params, frames * steps / total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = [(n, "frame", *measure(n, c, "frame", args.steps)) for n, c in FRAME.items()]
    rows += [(n, "utterance", *measure(n, c, "utterance", args.steps)) for n, c in CLIP.items()]
    base = rows[0][3]
    print(f"training throughput, {args.threads} thread(s), {args.steps} steps after warm-up\n")
    print("| model | level | parameters | frames/s | ratio to dnn |")
    print("| --- | --- | ---: | ---: | ---: |")
    for name, level, params, fps in rows:
        print(f"| {name} | {level} | {params:,} | {fps:,.0f} | {fps / base:.2f} |")


if __name__ == "__main__":
    main()
