"""Peak memory of streaming a KD epoch does not grow with corpus size.

For each corpus size, a fresh subprocess opens a ``TargetStream`` and trains a small
student (a linear layer) for one epoch with the KD loss; it reports its RSS after opening
(index only) and its peak RSS (``ru_maxrss``). The decoded data of the epoch (features +
targets) grows with the corpus; the peak must not, and stays below ``--budget`` MiB above
the baseline even for a corpus larger than the budget.

    python benchmarks/learn_memory.py [--sizes 400 1600 3200] [--budget 128]

The stream holds at most one block + the shuffle buffer + one batching window of
utterances (``--block-frames``, ``--buffer-utts``, ``--window-utts``; small here so that
the corpora exceed the bound several times).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from learn_common import build

CHILD = r"""
import json, resource, sys
import torch
torch.set_num_threads(1)
from kdpipe.learn.kd import kd_loss
from kdpipe.learn.stream import TargetStream

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

feats, store, classes = sys.argv[1], sys.argv[2], int(sys.argv[3])
block, buffer, window = (int(v) for v in sys.argv[4:7])
s = TargetStream([store], feats, batch_frames=4000, seed=0, block_frames=block,
                 buffer_utts=buffer, window_utts=window)
model = torch.nn.Linear(40, classes)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
base = rss()
frames = 0
for batch in s:
    logits = model(batch.x)
    loss, _, _ = kd_loss(logits, batch.lengths, batch)
    opt.zero_grad(); loss.backward(); opt.step()
    frames += int(batch.lengths.sum())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"frames": frames, "base": base, "peak": peak, "held": s.peak_held}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[400, 1600, 3200])
    ap.add_argument("--classes", type=int, default=500)
    ap.add_argument("--budget", type=float, default=128.0)
    ap.add_argument("--block-frames", type=int, default=1 << 14)
    ap.add_argument("--buffer-utts", type=int, default=128)
    ap.add_argument("--window-utts", type=int, default=64)
    a = ap.parse_args()
    knobs = [str(a.block_frames), str(a.buffer_utts), str(a.window_utts)]
    print(f"block_frames {a.block_frames}, buffer_utts {a.buffer_utts}, "
          f"window_utts {a.window_utts}, budget {a.budget:.0f} MiB")  # fmt: skip
    print(f"{'utts':>6s} {'frames':>9s} {'data MiB':>9s} {'base MiB':>9s} {'peak MiB':>9s} "
          f"{'peak-base':>9s} {'held utts':>9s}")  # fmt: skip
    for n in a.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            feats, store = build(Path(tmp), n, a.classes)
            out = subprocess.run(
                [sys.executable, "-c", CHILD, feats, store, str(a.classes), *knobs],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            data = r["frames"] * (40 * 4 + 8 * (8 + 4) + 4) / 2**20  # feats + idx/logp/tail
            grow = r["peak"] - r["base"]
            flag = "ok" if grow < a.budget else "OVER BUDGET"
            print(f"{n:6d} {r['frames']:9d} {data:9.1f} {r['base']:9.1f} {r['peak']:9.1f} "
                  f"{grow:9.1f} {r['held']:9d}  {flag}")  # fmt: skip


if __name__ == "__main__":
    main()
