"""Overhead of an ONNX member: ``kdpipe teach`` with a network exported to ONNX (kind
``onnx``, onnxruntime on the CPU) vs the same network as a kdpipe checkpoint.

Both teach the same corpus side by side in one process, alternating (which one goes first
alternates too), ``--repeats`` rounds after a dropped warm-up round; medians are reported.
"teach frames/s" is the whole ``teach()`` call (planning, loading, features, inference,
selection, the store); "forward frames/s" is the run's own time in the member's forward
passes (``TeachSummary.forward_seconds``: for ONNX this includes the torch -> numpy ->
torch copies), which is immune to load that changes between runs. The ONNX model is the
checkpoint's network exported with the legacy exporter (``dynamo=False``), dynamic batch
and time axes, lengths in and out.

    python benchmarks/onnx_member.py [--arch dnn] [--utts 160] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from kdpipe.essence import Rule
from kdpipe.models import build_model, load_checkpoint, make_card, save_checkpoint
from kdpipe.teach import EnsembleConfig, MemberConfig, teach
from kdpipe.testing.corpora import make_feature_store

F, C = 40, 56  # mel bins, phone labels (the phones corpus)
NETWORKS = {  # realistic CPU teachers
    "dnn": {"hidden_dim": 512, "num_layers": 3},  # +-5 frames of context: 440 inputs
    "blstm": {"hidden_dim": 256, "num_layers": 3},
    "tdnn": {"hidden_dim": 256},
}


def checkpoint(root: Path, arch: str, fs) -> Path:
    torch.manual_seed(0)
    model = build_model(arch, F, C, NETWORKS[arch])
    card = make_card(model, labels=fs.labels, features=fs.config,
                     feature_fingerprint=fs.config.fingerprint)  # fmt: skip
    save_checkpoint(root / arch, model, card)
    return root / arch


def export(ckpt: Path, path: Path) -> Path:
    model, _ = load_checkpoint(ckpt)
    x, lengths = torch.randn(2, 37, F), torch.tensor([37, 20])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation, tracer notes
        torch.onnx.export(
            model, (x, lengths), str(path), input_names=["feats", "lengths"],
            output_names=["logits", "out_lengths"], dynamo=False, opset_version=17,
            dynamic_axes={"feats": {0: "B", 1: "T"}, "lengths": {0: "B"},
                          "logits": {0: "B", 1: "T_out"}, "out_lengths": {0: "B"}},
        )  # fmt: skip
    return path


def timed(ens: EnsembleConfig, fs, out: Path) -> tuple[float, float, int]:
    """Wall seconds of one teach run, its forward seconds and frames."""
    t0 = time.perf_counter()
    s = teach(ens, fs.location, out, progress=False)
    seconds = time.perf_counter() - t0
    shutil.rmtree(out)
    return seconds, s.forward_seconds, s.frames


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=sorted(NETWORKS), default="dnn")
    ap.add_argument("--utts", type=int, default=160, help="utterances of 150-250 frames")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch (and onnxruntime) threads")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = Path(tempfile.mkdtemp(prefix="onnx-bench-"))
    try:
        labels = tuple(f"ph{i}" for i in range(C))
        fs = make_feature_store(work / "feats.zarr", labels=labels, num_mel_bins=F,
                                per_split={"train": a.utts}, frames=(150, 251))  # fmt: skip
        ckpt = checkpoint(work / "ckpt", a.arch, fs)
        onnx_file = export(ckpt, work / f"{a.arch}.onnx")
        rule = Rule("topk", {"k": 8})
        runs = {
            "checkpoint": EnsembleConfig(members=(MemberConfig(str(ckpt)),), rule=rule),
            "onnx": EnsembleConfig(
                members=(MemberConfig(kind="onnx", path=str(onnx_file)),), rule=rule
            ),
        }
        wall: dict[str, list[float]] = {k: [] for k in runs}
        forward: dict[str, list[float]] = {k: [] for k in runs}
        frames = 0
        for r in range(a.repeats + 1):  # round 0 warms caches and is dropped
            order = list(runs) if r % 2 else list(reversed(runs))
            for name in order:
                seconds, fwd, frames = timed(runs[name], fs, work / f"{name}.zarr")
                if r:
                    wall[name].append(seconds)
                    forward[name].append(fwd)
        rate = {k: frames / statistics.median(v) for k, v in wall.items()}
        fwd_rate = {k: frames / statistics.median(v) for k, v in forward.items()}
        print(f"{a.arch} {NETWORKS[a.arch]}, {frames:,} frames x {F} dims, {a.threads} "
              f"thread(s), {a.repeats} rounds (medians)\n")  # fmt: skip
        print("| member | teach s | teach frames/s | forward s | forward frames/s |")
        print("|---|---:|---:|---:|---:|")
        for k in runs:
            print(f"| {k} | {statistics.median(wall[k]):.3f} | {rate[k]:,.0f} | "
                  f"{statistics.median(forward[k]):.3f} | {fwd_rate[k]:,.0f} |")  # fmt: skip
        print(f"\nonnx / checkpoint: teach frames/s {rate['onnx'] / rate['checkpoint']:.2f}, "
              f"forward frames/s {fwd_rate['onnx'] / fwd_rate['checkpoint']:.2f}")  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
