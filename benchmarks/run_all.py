"""Run every benchmark that needs no prepared corpus, one after another (``make bench``).

``baselines.py`` needs the synthetic corpora (``make corpora``) and runs for a long time,
so it is run on its own.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "store_size.py",
    "store_read.py",
    "train_throughput.py",
    "onnx_member.py",
    "export_size.py",
    "import_speed.py",
    "teach_ceiling.py",
    "learn_throughput.py",
    "offline_vs_online.py",
    "synth_realism.py",
    "gpu.py",  # says so and stops where there is no CUDA
]

if __name__ == "__main__":
    for script in SCRIPTS:
        print(f"\n## {script}\n", flush=True)
        subprocess.run([sys.executable, str(HERE / script)], check=True)
