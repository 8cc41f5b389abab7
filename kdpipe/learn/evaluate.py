"""Run a model over labelled data: loss, accuracy and per-utterance predictions.

Legend: B batch, T' output frames, C classes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from kdpipe.batching import bucket_batches
from kdpipe.learn.data import LabelledData
from kdpipe.losses import IGNORE, align_frame_labels, hard_ce

if TYPE_CHECKING:
    from kdpipe.corpus.views import ViewConfig


@dataclass
class Predictions:
    """Argmax predictions and references per utterance (at the model's output rate)."""

    loss: float  # mean cross-entropy over counted frames (or clips)
    correct: int
    counted: int
    hyp: list[np.ndarray] = field(default_factory=list)  # N x (T'_i,) or N x (1,)
    ref: list[np.ndarray] = field(default_factory=list)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.counted, 1)


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    data: LabelledData,
    batch_frames: int = 40000,
    device: torch.device | str = "cpu",
    keep: bool = False,
) -> Predictions:
    """Evaluate ``model`` on ``data`` in length order; ``keep`` stores hyp/ref sequences."""
    was_training = model.training
    model.eval()
    sub = int(getattr(model, "subsampling", 1))
    total_loss, correct, counted = 0.0, 0, 0
    hyp: dict[int, np.ndarray] = {}
    ref: dict[int, np.ndarray] = {}
    for idx in bucket_batches(data.lengths, batch_frames):
        batch = data.batch(idx).to(torch.device(device))
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C) or (B, C)
        y = batch.y
        if data.level == "frame":
            y = align_frame_labels(y, sub, out_lengths, logits.shape[1])  # (B, T')
        loss, c, n = hard_ce(logits.float(), y)
        total_loss += float(loss) * n
        correct, counted = correct + c, counted + n
        if keep:
            pred = logits.argmax(-1).cpu().numpy()
            yy = y.cpu().numpy()
            for b, i in enumerate(batch.index):
                if data.level == "frame":
                    valid = yy[b] != IGNORE
                    hyp[int(i)], ref[int(i)] = pred[b][valid], yy[b][valid]
                else:
                    hyp[int(i)], ref[int(i)] = pred[b : b + 1], yy[b : b + 1]
    if was_training:
        model.train()
    out = Predictions(total_loss / max(counted, 1), correct, counted)
    if keep:
        out.hyp = [hyp[i] for i in range(len(data))]
        out.ref = [ref[i] for i in range(len(data))]
    return out


@dataclass
class EvalReport:
    """Scores of a checkpoint on one split of a feature store."""

    model: str
    corpus: str
    split: str
    level: str
    utterances: int
    cross_entropy: float
    accuracy: float  # frame accuracy (frame level) or clip accuracy (utterance level)
    phone_error_rate: float | None  # frame level only
    labels: list[str]
    confusion: np.ndarray  # (C, C) counts[ref, hyp]
    view: dict | None = None  # ViewConfig.to_dict() of the crop scored; None: whole utterances

    def to_dict(self) -> dict:
        key = "frame_accuracy" if self.level == "frame" else "clip_accuracy"
        out = {
            "model": self.model,
            "corpus": self.corpus,
            "split": self.split,
            "level": self.level,
            "utterances": self.utterances,
            "cross_entropy": self.cross_entropy,
            key: self.accuracy,
        }
        if self.phone_error_rate is not None:
            out["phone_error_rate"] = self.phone_error_rate
        if self.view is not None:
            out["view"] = self.view
        return out


def evaluate_checkpoint(
    model_dir: str | Path,
    corpus: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    device: str = "auto",
    trust_custom_code: bool = False,
    view: ViewConfig | None = None,
) -> EvalReport:
    """Score checkpoint ``model_dir`` on ``split`` (a name or a subset such as
    ``test[:50%]``) of feature store ``corpus``; with ``view``, on each utterance's crop
    window (``LabelledData.from_store``).

    Refuses a corpus whose label set or feature config disagrees with the checkpoint's
    card. With ``out``, writes ``metrics.json``, ``confusion.csv`` and ``confusion.png``.
    """
    from kdpipe.corpus.featstore import FeatureStore
    from kdpipe.metrics import confusion, phone_error_rate
    from kdpipe.models import load_checkpoint, pick_device

    store = FeatureStore.open(corpus)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev, trust_custom_code=trust_custom_code)
    level = store.level
    card.check_compatible(
        store.labels,
        store.config.fingerprint,
        f"corpus {corpus}",
        features=store.config,
        level=level,
        name=f"checkpoint {model_dir}",
    )
    data = LabelledData.from_store(store, split, view)
    pred = predict(model, data, device=dev, keep=True)
    names = list(store.labels.names)
    report = EvalReport(
        model=str(model_dir),
        corpus=str(corpus),
        split=split,
        level=level,
        utterances=len(data),
        cross_entropy=pred.loss,
        accuracy=pred.accuracy,
        phone_error_rate=phone_error_rate(pred.ref, pred.hyp, names) if level == "frame" else None,
        labels=names,
        confusion=confusion(pred.ref, pred.hyp, len(names)),
        view=None if view is None else view.to_dict(),
    )
    if out is not None:
        write_report(report, Path(out))
    return report


def write_report(report: EvalReport, out: Path) -> None:
    """``metrics.json``, ``confusion.csv`` (rows = reference) and ``confusion.png``."""
    import json

    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    with open(out / "confusion.csv", "w") as f:
        f.write("ref\\hyp," + ",".join(report.labels) + "\n")
        for name, row in zip(report.labels, report.confusion, strict=True):
            f.write(name + "," + ",".join(str(int(v)) for v in row) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = report.confusion.astype(np.float64)
    m = m / np.maximum(m.sum(1, keepdims=True), 1)  # row-normalised: recall per class
    size = min(4 + 0.12 * len(report.labels), 20)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues", vmin=0, vmax=1)
    if len(report.labels) <= 80:
        ticks = range(len(report.labels))
        ax.set_xticks(ticks, report.labels, rotation=90, fontsize=6)
        ax.set_yticks(ticks, report.labels, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(f"{report.split}: accuracy {report.accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)
