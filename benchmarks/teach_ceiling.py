"""The teach pipeline's own ceiling: ``kdpipe teach`` with a teacher that costs nothing.

The member is ``kdpipe.testing.teachers:FreeTeacher`` (kind ``module``): its logits are rows
of a fixed random table, so the run's time is what kdpipe spends around a teacher: reading
features, padding, log-softmax and the quality statistics, selection (top-k), encoding and
writing the store. Frames per second of that bound how fast a GPU teacher could be before
kdpipe becomes the bottleneck (issue 18's target: 1 M frames/s for top-8 of 2,000 classes
on 2 cores). ``--profile`` prints where the time goes (cProfile of one run, both threads:
the inference loop and the writer thread).

    python benchmarks/teach_ceiling.py [--utts 100] [--classes 2000] [--k 8] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from kdpipe.teach.ensemble_yaml import ensemble_from_dict
from kdpipe.teach.run import teach
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import FreeTeacher


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=200)
    ap.add_argument("--frames", type=int, default=1000, help="frames per utterance (about)")
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="1: a shared machine's honest rate")
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(f"cores {os.cpu_count()}, threads {a.threads}, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        names = tuple(f"c{i}" for i in range(a.classes))
        fs = make_feature_store(root / "feats.zarr", labels=names, num_mel_bins=40,
                                per_split={"train": a.utts, "dev": 1},
                                frames=(a.frames - 100, a.frames + 100))  # fmt: skip
        (root / "labels.txt").write_text("".join(n + "\n" for n in names))
        teacher = FreeTeacher(40, a.classes)
        save_file(teacher.state_dict(), str(root / "free.safetensors"))
        ens = ensemble_from_dict({
            "members": [{"kind": "module", "module": "kdpipe.testing.teachers:FreeTeacher",
                         "args": {"num_features": 40, "num_classes": a.classes},
                         "weights": str(root / "free.safetensors"),
                         "labels": str(root / "labels.txt")}],
            "rule": {"name": "topk", "params": {"k": a.k}}}, "benchmark")  # fmt: skip
        frames = int(fs.num_frames[fs.indices("train")].sum())
        print(f"{a.utts} utterances, {frames:,} frames, C = {a.classes}, top-{a.k}")

        def run(name: str) -> tuple[float, float]:
            """Frames/s of the whole run, and of its host side alone (what bounds a GPU
            teacher: selection runs on the device, so the host reads, pads, encodes and
            writes; the main thread and the writer thread work side by side)."""
            started = time.perf_counter()
            s = teach(ens, fs.location, root / f"{name}.zarr", progress=False,
                      trust_custom_code=True, batch_frames=20000)  # fmt: skip
            wall = time.perf_counter() - started
            print(f"  {name}: {frames / wall:,.0f} frames/s; seconds: wall {wall:.2f}, setup "
                  f"{s.setup_seconds:.2f}, members and selection {s.forward_seconds:.2f}, main "
                  f"thread's host work {s.host_seconds:.2f}, writer thread {s.writer_seconds:.2f}, "
                  f"waiting for the writer {s.wait_seconds:.2f}")  # fmt: skip
            return frames / wall, frames / max(s.host_seconds, s.writer_seconds)

        run("warm-up")
        rates, host = zip(*(run(f"round{i + 1}") for i in range(a.rounds)), strict=True)
        print(f"median {statistics.median(rates):,.0f} frames/s, all on the CPU; host side "
              f"alone, after the run's setup (the ceiling for a teacher on a GPU: the slower "
              f"of the two host threads) {statistics.median(host):,.0f} frames/s (target "
              f"1,000,000); load {os.getloadavg()[0]:.2f}")  # fmt: skip
        if a.profile:
            profiler = cProfile.Profile()
            threading.setprofile(lambda *args: profiler.enable())  # the writer thread too
            profiler.enable()
            run("profiled")
            profiler.disable()
            threading.setprofile(None)  # type: ignore[arg-type]
            text = io.StringIO()
            pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(18)
            print(text.getvalue())


if __name__ == "__main__":
    main()
