"""Teach overhead and multi-process throughput of ``kdpipe teach``.

Overhead = wall time of ``teach()`` (features, padding, inference, selection, encoding and
writing the store, in its writer thread) / wall time of the bare teacher forward passes
over the same padded batches (built beforehand, nothing else timed). Both run side by side
in one process, alternating, ``--repeats`` times; medians are reported. Target: <= 1.10 for
a BLSTM teacher and for a 3-member ensemble (BLSTM + DNN + TDNN).

"In-run" is the same run's wall time over the time its main thread spent in the members'
forward passes (plus the copy of the posteriors to the host): it is immune to load that
changes between runs, which on a shared machine dominates the side-by-side ratio.

Throughput: ``kdpipe teach`` as 1 process and as 2 (``torchrun --standalone``), frames/s
from each run's own summary (interpreter start-up excluded), one torch thread per process.

    python benchmarks/teach_overhead.py [--utts 160] [--repeats 3] [--threads 1] [--no-procs]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kdpipe.batching import pad_features
from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.models import build_model, load_checkpoint, make_card, save_checkpoint
from kdpipe.teach import EnsembleConfig, MemberConfig, teach
from kdpipe.teach.job import plan_batches
from kdpipe.testing.corpora import make_feature_store

F, C = 40, 56  # mel bins, phone labels (the phones corpus)
BATCH_FRAMES = 20000  # teach's default
TEACHERS = {
    "blstm": {"hidden_dim": 256, "num_layers": 3},  # the classic KD teacher
    "dnn": {"hidden_dim": 512, "num_layers": 4},
    "tdnn": {"hidden_dim": 256},
}


def checkpoint(root: Path, arch: str, fs) -> Path:
    torch.manual_seed(len(arch))
    model = build_model(arch, F, C, TEACHERS[arch])
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)  # peakier posteriors than at initialisation
    card = make_card(model, labels=fs.labels, features=fs.config,
                     feature_fingerprint=fs.config.fingerprint)  # fmt: skip
    save_checkpoint(root / arch, model, card)
    return root / arch


def bare_forward(ckpts: list[Path], fs, split: str) -> tuple[float, int]:
    """Seconds of the members' forward passes alone over teach's batches, and frames."""
    models = [load_checkpoint(c)[0] for c in ckpts]
    idx = fs.indices(split)
    batches = plan_batches(idx, fs.num_frames[idx], BATCH_FRAMES)
    padded = [pad_features([fs.features(int(i)) for i in b]) for _, b in batches]
    t0 = time.perf_counter()
    with torch.inference_mode():
        for x, lengths in padded:
            for m in models:
                m(x, lengths)
    return time.perf_counter() - t0, int(fs.num_frames[idx].sum())


def overhead(name: str, ens: EnsembleConfig, fs, work: Path, repeats: int) -> dict:
    ckpts = [Path(m.checkpoint) for m in ens.members]
    bare, full, inrun = [], [], []
    for r in range(repeats + 1):  # the first round warms caches and is dropped
        b, frames = bare_forward(ckpts, fs, "train")
        out = work / f"{name}-{r}.zarr"
        t0 = time.perf_counter()
        s = teach(ens, fs.location, out, split="train", progress=False)
        t = time.perf_counter() - t0
        shutil.rmtree(out)
        if r:
            bare.append(b)
            full.append(t)
            inrun.append(t / s.forward_seconds)
    mb, mt = statistics.median(bare), statistics.median(full)
    return {
        "teacher": name,
        "frames": frames,
        "bare_s": round(mb, 3),
        "teach_s": round(mt, 3),
        "overhead": round(mt / mb, 3),
        "overhead_min": round(min(full) / min(bare), 3),
        "overhead_in_run": round(statistics.median(inrun), 3),
        "per_round": [round(t / b, 3) for t, b in zip(full, bare, strict=True)],
        "bytes_per_frame": round(s.bytes_per_frame, 2),
    }


def procs(ckpt: Path, fs, work: Path, n: int) -> float:
    """Aggregate frames/s of ``kdpipe teach`` with ``n`` processes."""
    out = work / f"procs{n}.zarr"
    args = ["-m", "kdpipe", "teach", "--model", str(ckpt), "--corpus", fs.location, "--out",
            str(out), "--split", "train", "--no-progress", "--json", "--device", "cpu"]  # fmt: skip
    if n > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={n}", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if r.returncode:
        raise SystemExit(r.stderr[-2000:])
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    shutil.rmtree(out)
    return sum(x["frames"] for x in rows) / max(x["seconds"] for x in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--utts", type=int, default=160, help="train utterances (200-300 frames)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-procs", action="store_true", help="skip the torchrun throughput")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="teach-bench-"))
    try:
        labels = LabelSet(tuple(f"ph{i}" for i in range(C)))
        fs = make_feature_store(work / "feats.zarr", labels=labels.names, num_mel_bins=F,
                                per_split={"train": a.utts}, frames=(200, 301))  # fmt: skip
        ck = {k: checkpoint(work / "ckpt", k, fs) for k in TEACHERS}
        rule = Rule("topk", {"k": 8})
        single = EnsembleConfig(members=(MemberConfig(str(ck["blstm"])),), rule=rule)
        trio = EnsembleConfig(members=tuple(MemberConfig(str(c)) for c in ck.values()),
                              rule=rule, subsampling=1)  # fmt: skip
        rows = [overhead("blstm", single, fs, work, a.repeats),
                overhead("blstm+dnn+tdnn", trio, fs, work, a.repeats)]  # fmt: skip
        print("| teacher | frames | bare forward s | teach s | overhead (medians) | (minimums) "
              "| in-run | per round | B/frame |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---|---:|")
        for r in rows:
            print(f"| {r['teacher']} | {r['frames']:,} | {r['bare_s']} | {r['teach_s']} | "
                  f"{r['overhead']} | {r['overhead_min']} | {r['overhead_in_run']} | "
                  f"{r['per_round']} | {r['bytes_per_frame']} |")  # fmt: skip
        if not a.no_procs:
            one, two = procs(ck["blstm"], fs, work, 1), procs(ck["blstm"], fs, work, 2)
            print(f"\nthroughput (blstm, 1 thread/process): 1 process {one:,.0f} frames/s, "
                  f"2 processes {two:,.0f} frames/s, ratio {two / one:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
