"""The training loop, shared by supervised baselines, teachers and distilled students.

Short on purpose (after nanoGPT): batches -> forward -> objective -> AdamW step, an
evaluation on dev each epoch, early stopping, and a resumable state in ``OUT/last.pt``.
Legend: B batch, T frames, F features, C classes.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch.nn.parallel import DistributedDataParallel

from kdpipe.batching import bucket_batches
from kdpipe.console import err_console, progress_bar
from kdpipe.errors import TrainingError
from kdpipe.learn.data import Batch, LabelledData
from kdpipe.learn.distributed import Dist, barrier
from kdpipe.learn.evaluate import predict
from kdpipe.learn.log import append_metrics, plot_curves, read_metrics
from kdpipe.learn.lr_schedule import lr_at
from kdpipe.learn.specaug import spec_augment
from kdpipe.learn.train_config import TrainConfig
from kdpipe.losses import align_frame_labels, hard_ce
from kdpipe.models.checkpoint import load_training_state, save_training_state
from kdpipe.precision import autocast

LAST_STATE = "last.pt"  # training state after the latest finished epoch, for --resume


class Objective(Protocol):
    """Loss of one batch: returns (loss, correct, counted) for the running accuracy."""

    def __call__(
        self, model: torch.nn.Module, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, int, int]: ...


class Scores(Protocol):
    """What early stopping reads of a dev evaluation: the best epoch has the highest
    ``accuracy``; a class attribute ``loss_breaks_ties = True`` (CTC's scores) also counts
    an epoch of equal accuracy and lower ``loss`` as an improvement."""

    @property
    def loss(self) -> float: ...

    @property
    def accuracy(self) -> float: ...


# scores a model on dev: ``evaluate.predict`` (frame / clip accuracy) or ``ctc.score_ctc``
Evaluate = Callable[[torch.nn.Module, Any, torch.device], Scores]


@dataclass
class HardLabels:
    """Cross-entropy on hard labels (frame alignments or clip labels)."""

    level: str
    subsampling: int = 1
    label_smoothing: float = 0.0

    def __call__(
        self, model: torch.nn.Module, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, int, int]:
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C) or (B, C)
        y = batch.y
        if self.level == "frame":
            y = align_frame_labels(y, self.subsampling, out_lengths, logits.shape[1])
        return hard_ce(logits.float(), y, self.label_smoothing)


@dataclass
class TrainResult:
    best_epoch: int
    best_dev_acc: float
    epochs_run: int
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _seed_step(cfg: TrainConfig, epoch: int, step: int, rank: int) -> None:
    """Dropout and SpecAugment draws depend only on (seed, epoch, step, rank): resume is
    exact, at an epoch end or mid-epoch, with no generator state to save."""
    torch.manual_seed(((cfg.seed * 1_000_003 + epoch * 1009 + rank) * 100_003 + step) % 2**63)


class BatchSource(Protocol):
    """Where training batches come from: held in memory or streamed from a target store."""

    def epoch_batches(
        self, epoch: int, cfg: TrainConfig, dist: Dist, skip: int
    ) -> tuple[int, Iterable[Batch]]:
        """(batches this rank runs in ``epoch``, an iterable of them from batch ``skip``)."""
        ...

    def describe(self, index: Any) -> list[str]:
        """Utterance ids of a batch's ``index`` (for error messages)."""
        ...


@dataclass
class InMemory:
    """A ``LabelledData`` split as a ``BatchSource``: length-bucketed batches, reshuffled
    each epoch; every rank takes every ``world``-th batch."""

    data: LabelledData

    def epoch_batches(
        self, epoch: int, cfg: TrainConfig, dist: Dist, skip: int
    ) -> tuple[int, Iterable[Batch]]:
        batches = bucket_batches(self.data.lengths, cfg.batch_frames, seed=cfg.seed * 7919 + epoch)
        n_per_rank = len(batches) // dist.world
        if n_per_rank == 0:
            raise TrainingError(f"{len(batches)} batches cannot be split across {dist.world} ranks")
        mine = batches[dist.rank :: dist.world][:n_per_rank]
        return n_per_rank, (self.data.batch(idx) for idx in mine[skip:])

    def describe(self, index: Any) -> list[str]:
        return [self.data.ids[utt] for utt in index]


def _save_state(
    path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer, state: dict[str, Any]
) -> None:
    """Weights, optimizer and counters after an epoch, in one file replaced atomically."""
    save_training_state(
        path, {"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state}
    )


def _load_state(path: Path, model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, Any]:
    saved = load_training_state(path, next(model.parameters()).device)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    return dict(saved["state"])


def train(
    model: torch.nn.Module,
    train_data: LabelledData | BatchSource,
    dev_data: LabelledData,
    cfg: TrainConfig,
    out: Path,
    objective: Objective,
    save_best: Callable[[torch.nn.Module, dict[str, Any]], None],
    resume: bool = False,
    dist: Dist | None = None,
    device: torch.device | None = None,
    progress: bool = True,
    evaluate: Evaluate | None = None,
) -> TrainResult:
    """Train ``model`` (already on ``device``) and call ``save_best`` on each new best epoch.

    ``train_data`` is a ``LabelledData`` split or any ``BatchSource`` (a target stream).
    ``out/last.pt`` holds the state after the latest finished epoch, or every
    ``cfg.save_every`` steps within one; ``resume=True`` continues from it and ends with the
    same weights as an uninterrupted run. ``evaluate`` scores ``dev_data`` after each
    epoch (default ``evaluate.predict``); its ``accuracy`` picks the best epoch.
    """
    source = InMemory(train_data) if isinstance(train_data, LabelledData) else train_data
    dist = dist or Dist()
    device = device or torch.device("cpu")
    out.mkdir(parents=True, exist_ok=True)
    net = model
    if dist.enabled:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log_path, last = out / "metrics.jsonl", out / LAST_STATE
    # counters after the latest finished epoch; mid-epoch saves add "step" and "sums"
    state: dict[str, Any] = {"epoch": 0, "best_epoch": 0, "best_dev_acc": -1.0, "bad_epochs": 0}
    if resume and last.is_file():
        state = _load_state(last, model, opt)
    elif dist.is_main and log_path.exists():
        log_path.unlink()  # a fresh run starts a fresh log
    barrier(dist)
    start = time.perf_counter()
    epoch: int = state["epoch"]
    while epoch < cfg.epochs and not (cfg.patience and state["bad_epochs"] >= cfg.patience):
        skip = int(state.get("step", 0))
        num_batches, batches = source.epoch_batches(epoch, cfg, dist, skip)
        net.train()
        epoch_start = time.perf_counter()
        tot_loss, correct, counted, frames = state.get("sums") or (0.0, 0, 0, 0)
        lr = cfg.lr
        label, show = f"epoch {epoch + 1}/{cfg.epochs}", progress and dist.is_main
        with progress_bar(label, num_batches, enabled=show, unit="batches") as advance:
            advance(skip)
            for step, batch in enumerate(batches, start=skip):
                if step >= num_batches:
                    break
                _seed_step(cfg, epoch, step, dist.rank)
                progress_epochs = epoch + step / num_batches
                lr = lr_at(progress_epochs, cfg.lr, cfg.epochs, cfg.warmup_epochs, cfg.min_lr_ratio)
                for group in opt.param_groups:
                    group["lr"] = lr
                batch = batch.to(device)
                if cfg.spec_augment:
                    batch.x = spec_augment(
                        batch.x,
                        batch.lengths,
                        cfg.freq_masks,
                        cfg.freq_mask_width,
                        cfg.time_masks,
                        cfg.time_mask_width,
                    )
                with autocast(device, cfg.precision):  # bf16: the forward and the loss
                    loss, batch_correct, batch_counted = objective(net, batch, epoch)
                value = loss.detach().item()
                if not math.isfinite(value):
                    raise TrainingError(
                        f"loss is {value} at epoch {epoch + 1}, batch {step + 1} "
                        f"(utterances {source.describe(batch.index[:3])}...)"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                tot_loss += value * batch_counted
                correct, counted = correct + batch_correct, counted + batch_counted
                frames += int(batch.lengths.sum())
                advance(1)
                done = step + 1  # batches of this epoch done
                save_now = cfg.save_every and done % cfg.save_every == 0 and done < num_batches
                if save_now and dist.is_main:
                    sums = (tot_loss, correct, counted, frames)
                    _save_state(last, model, opt, {**state, "step": done, "sums": sums})
        train_secs = time.perf_counter() - epoch_start
        dev = (evaluate or _predict)(model, dev_data, device)
        epoch += 1
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": tot_loss / max(counted, 1),
            "train_acc": correct / max(counted, 1),
            "dev_loss": dev.loss,
            "dev_acc": dev.accuracy,
            "frames_per_s": frames * dist.world / max(train_secs, 1e-9),
            "seconds": train_secs,
        }
        if not math.isfinite(row["dev_loss"]):
            raise TrainingError(f"dev loss is {row['dev_loss']} after epoch {epoch}")
        improved = dev.accuracy > state["best_dev_acc"]
        if getattr(dev, "loss_breaks_ties", False) and dev.accuracy == state["best_dev_acc"]:
            improved = dev.loss < state.get("best_dev_loss", math.inf)  # CTC's blank plateau
        state.update(epoch=epoch, bad_epochs=0 if improved else state["bad_epochs"] + 1)
        state.update(step=0, sums=None)
        if improved:
            state.update(best_epoch=epoch, best_dev_acc=dev.accuracy, best_dev_loss=dev.loss)
        if dist.is_main:
            if improved:
                save_best(model, {"epoch": epoch, "dev_acc": dev.accuracy, "dev_loss": dev.loss})
            append_metrics(log_path, row)
            _save_state(last, model, opt, state)
            _print_row(row, improved, progress)
        barrier(dist)
    history = read_metrics(log_path) if dist.is_main else []
    if dist.is_main:
        plot_curves(history, out / "curves.png")
    return TrainResult(
        state["best_epoch"], state["best_dev_acc"], epoch, time.perf_counter() - start, history
    )


def _predict(model: torch.nn.Module, data: Any, device: torch.device) -> Scores:
    return predict(model, data, device=device)


def _print_row(row: dict[str, Any], improved: bool, enabled: bool) -> None:
    if not enabled:
        return

    star = " *" if improved else ""
    err_console.print(
        f"epoch {row['epoch']:3d}  train {row['train_loss']:.3f}/{row['train_acc']:.3f}  "
        f"dev {row['dev_loss']:.3f}/{row['dev_acc']:.3f}  {row['frames_per_s']:,.0f} fr/s{star}",
        highlight=False,
    )
