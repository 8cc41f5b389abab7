"""Per-epoch metrics: a JSON-lines log and a PNG of the curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def append_metrics(path: Path, row: dict[str, Any]) -> None:
    with open(path, "a") as log:
        log.write(json.dumps(row, sort_keys=True) + "\n")


def read_metrics(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_curves(rows: list[dict[str, Any]], out: Path) -> None:
    """Loss (train, dev) and dev accuracy per epoch, side by side."""
    if not rows:
        return
    epochs = [row["epoch"] for row in rows]
    fig = Figure(figsize=(9, 3.2))  # no pyplot: no global backend or figure to close
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(epochs, [row["train_loss"] for row in rows], label="train")
    loss_ax.plot(epochs, [row["dev_loss"] for row in rows], label="dev")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("cross-entropy")
    loss_ax.legend()
    acc_ax.plot(epochs, [row["dev_acc"] for row in rows], color="C2")
    acc_ax.set_xlabel("epoch")
    acc_ax.set_ylabel("dev accuracy")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
