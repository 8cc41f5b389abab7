"""teach and store-fed learning on a GPU: the ratios the CPU benchmarks print, measured
where kdpipe is meant to run them.

Without CUDA it says so and exits 0 (``--device cpu`` runs the same measurements on the
CPU, smaller, to check the script). On a GPU, side by side in one run:

1. **teach** over a synthetic corpus (``--utts`` utterances of ~1,000 frames, ``--classes``
   classes, top-8) with the ensemble of ``pipelines/essence_ensemble``'s three teacher
   shapes (BLSTM 2 x 128, TDNN, DNN 3 x 512; random weights: the time does not depend on
   them) at fp32 and at bf16, and with a teacher that costs nothing
   (``kdpipe.testing.teachers.FreeTeacher``): frames/s, bf16 / fp32, and where the time
   goes (members and device-side selection; the host's reading, padding and writing).
2. **learn** from a top-8 store vs the same batches in device memory, DNN and LSTM
   students, fp32 and bf16: frames/s and stream / memory (target 0.95).

    python benchmarks/gpu.py [--utts 400] [--classes 2000] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).parent))
from learn_common import build
from learn_throughput import run_epoch

from kdpipe.essence import Rule
from kdpipe.labels import LabelSet
from kdpipe.learn.stream import TargetStream
from kdpipe.models import build_model, make_card, save_checkpoint
from kdpipe.teach.ensemble_yaml import EnsembleConfig, MemberConfig, ensemble_from_dict
from kdpipe.teach.run import TeachSummary, teach
from kdpipe.testing.corpora import make_feature_store
from kdpipe.testing.teachers import FreeTeacher

RECIPE = Path(__file__).parent.parent / "pipelines" / "essence_ensemble"
STUDENTS = {
    "dnn": {"hidden_dim": 256, "num_layers": 3},
    "lstm": {"hidden_dim": 128, "num_layers": 2},
}


def teach_rates(root: Path, utts: int, classes: int, device: str) -> None:
    """Part 1: the recipe ensemble at fp32 and bf16, and the free teacher."""
    names = tuple(f"c{i}" for i in range(classes))
    fs = make_feature_store(root / "feats.zarr", labels=names, num_mel_bins=40,
                            per_split={"train": utts, "dev": 1}, frames=(900, 1100))  # fmt: skip
    frames = int(fs.num_frames[fs.indices("train")].sum())
    members = []
    for name in ("blstm", "tdnn", "dnn"):
        config = yaml.safe_load((RECIPE / f"teacher-{name}.yaml").read_text())
        model = build_model(config["student"], fs.dim, classes, config["model"])  # random
        card = make_card(model, labels=LabelSet(names), features=fs.config,
                         feature_fingerprint=fs.feature_fingerprint,
                         data_fingerprint=fs.fingerprint)  # fmt: skip
        save_checkpoint(root / name, model, card)
        members.append(MemberConfig(str(root / name)))
    ensemble = EnsembleConfig(tuple(members), rule=Rule("topk", {"k": 8}))
    (root / "labels.txt").write_text("".join(n + "\n" for n in names))
    save_file(FreeTeacher(40, classes).state_dict(), str(root / "free.safetensors"))
    free = ensemble_from_dict({
        "members": [{"kind": "module", "module": "kdpipe.testing.teachers:FreeTeacher",
                     "args": {"num_features": 40, "num_classes": classes},
                     "weights": str(root / "free.safetensors"),
                     "labels": str(root / "labels.txt")}],
        "rule": {"name": "topk", "params": {"k": 8}}}, "free")  # fmt: skip

    def run(name: str, ens: EnsembleConfig) -> TeachSummary:
        s = teach(ens, fs.location, root / f"{name}.zarr", progress=False, device=device,
                  trust_custom_code=True, overwrite=True)  # fmt: skip
        print(f"  teach {name:14s} {s.frames / s.seconds:12,.0f} frames/s; seconds: setup "
              f"{s.setup_seconds:.2f}, members and selection {s.forward_seconds:.2f}, host "
              f"main {s.host_seconds:.2f}, writer {s.writer_seconds:.2f}")  # fmt: skip
        return s

    print(f"teach: {utts} utterances, {frames:,} frames, C = {classes}, top-8, on {device}")
    run("warm-up", free)
    fp32 = run("ensemble fp32", ensemble)
    bf16 = run("ensemble bf16", replace(ensemble, precision="bf16"))
    ceiling = run("free teacher", free)
    print(
        f"teach ratios: bf16 / fp32 {fp32.seconds / bf16.seconds:.2f}x; free teacher "
        f"{ceiling.frames / ceiling.seconds:,.0f} frames/s, its host side alone "
        f"{ceiling.frames / max(ceiling.host_seconds, ceiling.writer_seconds):,.0f} "
        "frames/s (target 1 M)"
    )


def learn_rates(root: Path, utts: int, classes: int, device: torch.device) -> None:
    """Part 2: store-fed vs device-memory training, two students, two precisions."""
    feats, store = build(root / "learn", utts, classes)
    stream = TargetStream([store], feats, batch_frames=8000, seed=0)
    in_memory = [batch.to(device) for batch in stream.loader()]  # the same epoch, on device
    print(f"learn: {utts} utterances, C = {classes}, top-8 store, on {device}")
    for student, config in STUDENTS.items():
        for precision in ("fp32", "bf16"):
            torch.manual_seed(0)
            model = build_model(student, 40, classes, config).to(device)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
            run_epoch(model, opt, in_memory, device, precision)  # warm-up (kernels, caches)
            best = {"stream": 0.0, "memory": 0.0}
            for _ in range(2):
                for mode, batches in (("stream", stream.loader()), ("memory", in_memory)):
                    frames, seconds = run_epoch(model, opt, batches, device, precision)
                    best[mode] = max(best[mode], frames / seconds)
            print(f"  {student} {precision}: stream {best['stream']:,.0f} frames/s, memory "
                  f"{best['memory']:,.0f}; stream / memory {best['stream'] / best['memory']:.3f}"
                  " (target 0.95)")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--utts", type=int, default=400)
    ap.add_argument("--classes", type=int, default=2000)
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu (a smaller check)")
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        print(f"benchmarks/gpu.py: no CUDA device here ({os.cpu_count()} cores, torch "
              f"{torch.__version__}); skipped. `--device cpu` runs its measurements on the "
              "CPU to check the script.")  # fmt: skip
        return
    device = torch.device(a.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {name}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        teach_rates(Path(tmp), a.utts, a.classes, a.device)
        learn_rates(Path(tmp), a.utts, a.classes, device)


if __name__ == "__main__":
    main()
