"""Per-epoch metrics: a JSON-lines log and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(rows: list[dict[str, Any]], out: Path) -> None:
    """Loss (train, dev) and dev accuracy per epoch, side by side."""
    if not rows:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    a.plot(ep, [r["train_loss"] for r in rows], label="train")
    a.plot(ep, [r["dev_loss"] for r in rows], label="dev")
    a.set_xlabel("epoch")
    a.set_ylabel("cross-entropy")
    a.legend()
    b.plot(ep, [r["dev_acc"] for r in rows], color="C2")
    b.set_xlabel("epoch")
    b.set_ylabel("dev accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
