"""CTC distillation: bytes per frame of a CTC teacher's top-k essences, and what KD costs a
CTC student's training step (issue 16).

Data: the small synthetic phone corpus, at the paths ``make corpora`` uses
(``data/synth/phones-small`` -> ``data/feats/phones-small.zarr``), made here if missing.

Teacher: a BLSTM-CTC, 3 x 128 per direction (``pipelines/ctc_distill``'s), over frames
stacked 4 to one (40 ms output frames; 3 if the corpus' utterances are too short for their
phones at 40 ms), trained ``--teacher-epochs`` on the train split's phone transcripts
(``learn --loss ctc --units phones``) into ``exp/bench-ctc/``; reused on a rerun when its
card records the same run. Its greedy dev token accuracy (1 - TER) is printed.

Bytes per frame: ``kdpipe teach --topk K`` (the Python call behind it) over the train split
for K = 1, 2, 4, 8, and ``--threshold 0.01`` for contrast (a variable number of classes per
frame); on-disk bytes per stored (40 ms) frame of the target arrays (indices + values +
tail, + row offsets for variable rows) and of the whole store (per-utterance index and
metadata included), and per second of audio; with the teacher's mean entropy, mean blank
probability, the fraction of "spike" frames (blank below 0.5: what ``kd.ctc_frames=spikes``
keeps) and the tail mass the rule drops; and the same for a frame-label (CE) BLSTM teacher
of the same size at 10 ms, trained ``--ce-epochs`` (0: none), for contrast.

Throughput: one LSTM-CTC student (2 x 96, ``delay: 3``, at the teacher's rate), same data,
seed and settings, trained through ``train_run`` (what ``kdpipe learn`` calls) as (a) plain
CTC (``--loss ctc``: batches held in memory), (b) CTC + KD from the top-4 store (alpha 0.5;
batches streamed from the store, read in the training process: ``kd.workers`` 0, the
default), (c) (b) with ``kd.ctc_frames=spikes``, (d) (b) with ``kd.workers=1`` (a DataLoader
worker process reads the store while the model trains); each run ``--epochs`` epochs with
patience 0, the modes interleaved (a, b, c, d, a, b, c, d, ...) ``--rounds`` times.
Frames/s are the training loop's own (metrics.jsonl ``frames_per_s``: dev scoring
excluded), of every epoch but each run's first (warm-up); medians. Target: b / a and c / a
at least 0.95.

Breakdown (same process, one model, interleaved rounds, medians): training steps of CTC
alone on plain CTC's in-memory batches and on the stream's batches (held in memory), of
CTC + KL and CTC + KL on spike frames on the stream's batches, and reading the stream alone
for an epoch: how much of (b)'s step is the batching, the KL term and the store reading.
Then (b)'s steps taken apart phase by phase (next batch from the stream, forward, CTC
term, KL term, greedy accuracy, backward, clip + AdamW), one epoch per round.

    .venv/bin/python benchmarks/ctc.py [--teacher-epochs 30] [--epochs 6] [--rounds 5]
        [--threads 1] [--ce-epochs 6]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdpipe.batching import bucket_batches
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.errors import TrainingError
from kdpipe.essence import Rule
from kdpipe.learn.ctc import (
    CtcObjective,
    accuracy_counts,
    ctc_student,
    ctc_term,
    greedy_errors,
    token_split,
)
from kdpipe.learn.kd import CtcKd
from kdpipe.learn.kd_config import KdConfig
from kdpipe.learn.runs import build_run, train_run
from kdpipe.learn.stream import TargetStream
from kdpipe.levels import FRAME
from kdpipe.models import read_card
from kdpipe.store.reader import StoreReader
from kdpipe.teach import single_teacher, teach

ROOT = Path(__file__).resolve().parent.parent
SYNTH = "data/synth/phones-small"  # the Makefile's $(PH) at SIZE=small
FEATS = "data/feats/phones-small.zarr"
KS = (1, 2, 4, 8)
P_MIN = 0.01  # the threshold rule's row, for contrast: peaky CTC rows keep ~1 class
FRAME_ARRAYS = ("indices", "values", "tail", "row_offsets")  # row_offsets: variable rows only
TEACHER = {"hidden_dim": 128, "num_layers": 3, "dropout": 0.2}  # pipelines/ctc_distill
STUDENT = {"hidden_dim": 96, "num_layers": 2, "dropout": 0.1, "delay": 3}
TEACHER_TRAIN = {"lr": 0.003, "batch_frames": 4000, "patience": 0, "warmup_epochs": 0.5}
STUDENT_TRAIN = {"lr": 0.003, "batch_frames": 4000, "patience": 0, "seed": 0}
GRAD_CLIP = 5.0  # the trainer's default (TrainConfig.grad_clip), for the steps timed here
MODES = {  # name -> kd settings (None: plain CTC, no store)
    "a": None,
    "b": {"alpha": 0.5},
    "c": {"alpha": 0.5, "ctc_frames": "spikes"},
    "d": {"alpha": 0.5, "workers": 1},
}
LABEL = {
    "a": "plain CTC",
    "b": "CTC + KD (top-4, alpha 0.5)",
    "c": "CTC + KD, spikes",
    "d": "CTC + KD, the stream read by 1 worker process",
}


def kdpipe(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "kdpipe", *args], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL)  # fmt: skip


def corpus() -> str:
    """The small phone corpus' feature store (synthesised and prepared when missing)."""
    if not (ROOT / SYNTH / "synth.json").is_file():
        kdpipe("corpus", "synth", "phones", SYNTH, "--size", "small", "--overwrite")
    if not (ROOT / FEATS / "zarr.json").is_file():
        kdpipe("corpus", "prepare", SYNTH, "--out", FEATS, "--overwrite")
    return str(ROOT / FEATS)


def _same_run(card_training: dict[str, Any], run: Any) -> bool:
    """Whether a card's training record is ``run`` (threads and device aside)."""
    want = json.loads(json.dumps(run.to_dict()))
    got = {k: v for k, v in card_training.items() if k not in ("objective", "parameters")}
    for rec in (want, got):
        rec.get("train", {}).pop("num_threads", None)
        rec.get("train", {}).pop("device", None)
    return got == want


def trained(out: Path, run: Any) -> tuple[dict[str, Any], bool]:
    """Train ``run`` into ``out`` unless a checkpoint of the same run is there; (the card's
    best dev metrics, whether it was reused)."""
    if (out / "card.json").is_file():
        card = read_card(out)
        if _same_run(card.training, run):
            return dict(card.metrics), True
    train_run(run, out, overwrite=True, progress=False)
    return dict(read_card(out).metrics), False


def ctc_teacher(feats: str, work: Path, epochs: int, threads: int) -> tuple[Path, int, dict]:
    """The BLSTM-CTC teacher at 40 ms (30 ms when 40 leaves utterances too short)."""
    for s in (4, 3):
        run = build_run({}, corpus=feats, student="blstm", model={**TEACHER, "subsampling": s},
                        train={**TEACHER_TRAIN, "epochs": epochs, "num_threads": threads},
                        loss="ctc", ctc={"units": "phones"})  # fmt: skip
        out = work / f"teacher-blstm-ctc-s{s}"
        t0 = time.perf_counter()
        try:
            metrics, reused = trained(out, run)
        except TrainingError as error:
            if s == 4 and "fewer output frames" in str(error):
                print(f"NOTE: subsampling 4 (40 ms) is too coarse for this corpus ({error}); "
                      "using 3 (30 ms)")  # fmt: skip
                continue
            raise
        how = "reused" if reused else f"trained in {time.perf_counter() - t0:.0f} s"
        print(f"CTC teacher: BLSTM 3 x 128, subsampling {s} ({10 * s} ms), {epochs} epochs, "
              f"{how}: dev greedy token accuracy (1 - TER) {metrics['dev_acc']:.3f} "
              f"(best epoch {metrics['epoch']}) -> {out}", flush=True)  # fmt: skip
        return out, s, metrics
    raise AssertionError("unreachable")


def ce_teacher(feats: str, work: Path, epochs: int, threads: int) -> Path:
    run = build_run({}, corpus=feats, student="blstm", model=TEACHER,
                    train={**TEACHER_TRAIN, "epochs": epochs, "num_threads": threads})  # fmt: skip
    out = work / "teacher-blstm-ce"
    t0 = time.perf_counter()
    metrics, reused = trained(out, run)
    how = "reused" if reused else f"trained in {time.perf_counter() - t0:.0f} s"
    print(f"CE teacher: BLSTM 3 x 128, 10 ms, {epochs} epochs, {how}: dev frame accuracy "
          f"{metrics['dev_acc']:.3f} -> {out}", flush=True)  # fmt: skip
    return out


def _files(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


def essence_row(teacher: Path, feats: str, out: Path, rule: Rule, blank: int | None) -> dict:
    """``kdpipe teach`` with ``rule`` over train into ``out``, and what the store holds."""
    t0 = time.perf_counter()
    summary = teach(single_teacher(teacher, rule), feats, out, split="train", overwrite=True,
                    progress=False, device="cpu")  # fmt: skip
    secs = time.perf_counter() - t0
    r = StoreReader(out)
    n = r.total_frames
    parts = [out / "parts" / p.id / "frame" for p in r.parts]
    size = {a: sum(_files(p / a) for p in parts) / n for a in FRAME_ARRAYS}
    blanks, top1, tails, widths = [], [], [], []
    for block in r.blocks():
        f = block.frame
        p = np.exp(f.logprobs()).ravel()  # (R * k,) or (nnz,): entries, rows in turn
        rows, classes = f.row_ids().ravel(), f.class_ids().ravel()
        first = np.r_[0, np.cumsum(f.widths())[:-1]]  # (R,) each row's top-1 entry
        top1.append(p[first])
        tails.append(f.tail_mass())
        widths.append(f.widths())
        if blank is not None:
            blanks.append(np.bincount(rows, p * (classes == blank), minlength=len(f)))  # (R,)
    b = np.concatenate(blanks) if blanks else None
    shift_ms = float(r.meta.features["config"]["frame_shift_ms"]) * r.meta.subsampling
    k = rule.params.get("k")
    return {
        "rule": f"top-{k}" if rule.name == "topk" else f"p >= {rule.params['p_min']}",
        "k": k,
        "width": float(np.concatenate(widths).mean()),
        "frames": n,
        "shift_ms": shift_ms,
        "classes": r.meta.num_classes,
        **size,
        "targets": sum(size.values()),
        "store": _files(out) / n,
        "entropy": summary.mean_entropy,
        "top1": float(np.concatenate(top1).mean()),
        "tail_mass": float(np.concatenate(tails).mean()),
        "blank": None if b is None else float(b.mean()),
        "spikes": None if b is None else float((b < 0.5).mean()),
        "teach_fps": summary.frames_per_second,
        "seconds": secs,
    }


def essences(teacher: Path, feats: str, work: Path, name: str, blank: int | None) -> list:
    """The rows of every rule (top-k for each k, then the threshold) for one teacher."""
    rules = [Rule("topk", {"k": k}) for k in KS] + [Rule("threshold", {"p_min": P_MIN})]
    return [essence_row(teacher, feats, work / f"{name}-{_tag(rule)}.zarr", rule, blank)
            for rule in rules]  # fmt: skip


def _tag(rule: Rule) -> str:
    """A store's name part: top4, p0.01."""
    return f"top{rule.params['k']}" if rule.name == "topk" else f"p{rule.params['p_min']}"


def student_run(feats: str, store: str, s: int, mode: str, epochs: int, threads: int) -> Any:
    kd = MODES[mode]
    return build_run({}, corpus=feats, student="lstm", model={**STUDENT, "subsampling": s},
                     train={**STUDENT_TRAIN, "epochs": epochs, "num_threads": threads},
                     loss="ctc", ctc={"units": "phones"}, kd=kd,
                     targets=None if kd is None else [(store, 1.0)])  # fmt: skip


def throughput(feats: str, store: str, s: int, work: Path, a: argparse.Namespace) -> dict:
    """Per mode: training frames/s of every epoch after each run's first, over the rounds."""
    fps: dict[str, list[float]] = {m: [] for m in MODES}
    for r in range(a.rounds):
        line = []
        for mode in MODES:
            out = work / "students" / f"{mode}-{r}"
            res = train_run(student_run(feats, store, s, mode, a.epochs, a.threads), out,
                            overwrite=True, progress=False)  # fmt: skip
            rows = res.history[1:] or res.history
            fps[mode] += [row["frames_per_s"] for row in rows]
            line.append(f"{mode} {statistics.median(row['frames_per_s'] for row in rows):,.0f}")
            shutil.rmtree(out, ignore_errors=True)
        print(f"round {r + 1}: frames/s {', '.join(line)}", flush=True)
    return fps


def _step(model, opt, objective, batch, epoch: int = 0) -> None:
    """One of the trainer's steps: forward, objective, backward, clip, AdamW."""
    loss, _, _ = objective(model, batch, epoch)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    opt.step()


def _timed_epoch(model, opt, objective, batches) -> float:
    t0 = time.perf_counter()
    for batch in batches:
        _step(model, opt, objective, batch)
    return time.perf_counter() - t0


def _padding(batches) -> tuple[int, float]:
    """(batches, real frames / padded frames)."""
    real = sum(int(b.lengths.sum()) for b in batches)
    padded = sum(int(b.x.shape[0] * b.x.shape[1]) for b in batches)
    return len(batches), real / padded


def breakdown(feats: str, store: str, s: int, a: argparse.Namespace) -> dict:
    """Seconds per epoch of training steps on held batches, of reading the stream, and of
    its two sources read alone (every train utterance's features, the whole store)."""
    run = student_run(feats, store, s, "b", a.epochs, a.threads)
    fs = FeatureStore.open(feats)
    units, model, _ = ctc_student(run, fs)
    data = token_split(fs, "train", units, s)
    plain = [data.batch(i) for i in bucket_batches(data.lengths, 4000, seed=1)]  # (a) epoch 2
    tokens = {fs.index_of(u): t for u, t in zip(data.ids, data.tokens, strict=True)}
    stream = TargetStream(
        [(store, 1.0)], feats, "train", batch_frames=4000, seed=0, subsampling=s,
        level=FRAME, hard_labels="none", tokens=tokens,
    )  # fmt: skip
    stream.set_epoch(1)
    streamed = list(stream.loader())
    blank = units.blank
    ctc_only = CtcObjective(blank)
    kl = CtcObjective(blank, CtcKd(KdConfig(alpha=0.5), a.epochs, blank))
    spikes = CtcObjective(blank, CtcKd(KdConfig(alpha=0.5, ctc_frames="spikes"), a.epochs, blank))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    train_idx = [int(i) for i in fs.indices("train")]
    secs: dict[str, list[float]] = {}
    for r in range(a.rounds + 1):  # round 0 warms up and is dropped
        times = {
            "plain": _timed_epoch(model, opt, ctc_only, plain),
            "ctc": _timed_epoch(model, opt, ctc_only, streamed),
            "kl": _timed_epoch(model, opt, kl, streamed),
            "spikes": _timed_epoch(model, opt, spikes, streamed),
        }
        t0 = time.perf_counter()
        stream.set_epoch(1)
        for _ in stream.loader():
            pass
        t1 = time.perf_counter()
        for i in train_idx:
            fs.features(i)  # (T, F), CMVN applied, as the stream reads them
        t2 = time.perf_counter()
        reader = StoreReader(store)
        reader.read(list(reader.ids))
        t3 = time.perf_counter()
        times.update(read=t1 - t0, features=t2 - t1, targets=t3 - t2)
        for k, v in times.items():
            if r:
                secs.setdefault(k, []).append(v)
    return {
        "secs": {k: statistics.median(v) for k, v in secs.items()},
        "frames": sum(int(b.lengths.sum()) for b in streamed),
        "plain_batches": _padding(plain),
        "stream_batches": _padding(streamed),
        "parts": (stream, model, opt, kl.soft, blank),
    }


PHASES = ("next batch (stream)", "forward", "CTC term", "KL term", "greedy accuracy",
          "backward", "clip + AdamW")  # fmt: skip


def phases(parts: tuple, rounds: int) -> dict[str, float]:
    """Seconds per epoch of each phase of (b)'s steps, batches pulled from the stream as the
    trainer pulls them (``CtcObjective`` with ``CtcKd``, taken apart; medians of rounds)."""
    stream, model, opt, kd_term, blank = parts
    runs = []
    for r in range(rounds):
        t = dict.fromkeys(PHASES, 0.0)
        stream.set_epoch(2 + r)
        batches = iter(stream.loader())
        while True:
            t0 = time.perf_counter()
            batch = next(batches, None)
            t1 = time.perf_counter()
            t["next batch (stream)"] += t1 - t0
            if batch is None:
                break
            logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C)
            t2 = time.perf_counter()
            hard = ctc_term(logits, out_lengths, batch.tokens, blank, batch.targets.weight)
            t3 = time.perf_counter()
            soft, alpha = kd_term(logits, out_lengths, batch), kd_term.alpha(0)
            loss = alpha * soft + (1 - alpha) * hard
            t4 = time.perf_counter()
            with torch.no_grad():
                accuracy_counts(greedy_errors(logits, out_lengths, batch.tokens, blank))
            t5 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            t6 = time.perf_counter()
            torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
            opt.step()
            t7 = time.perf_counter()
            for name, dt in zip(PHASES[1:], (t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5,
                                             t7 - t6), strict=True):  # fmt: skip
                t[name] += dt
        runs.append(t)
    return {name: statistics.median(run[name] for run in runs) for name in PHASES}


def _fmt(v: float | None, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher-epochs", type=int, default=30, help="CTC teacher epochs")
    ap.add_argument("--epochs", type=int, default=6, help="epochs per student run")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds of a, b, c, d")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--ce-epochs", type=int, default=6, help="10 ms CE teacher epochs (0: none)")
    ap.add_argument("--workdir", type=Path, default=ROOT / "exp" / "bench-ctc")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    work = a.workdir
    work.mkdir(parents=True, exist_ok=True)
    load0, t_start = os.getloadavg()[0], time.perf_counter()
    print(f"# CTC benchmark: {os.cpu_count()} CPUs, load {load0:.1f}, {a.threads} torch "
          f"thread(s)", flush=True)  # fmt: skip
    feats = corpus()
    teacher, s, _ = ctc_teacher(feats, work, a.teacher_epochs, a.threads)
    blank = int(read_card(teacher).ctc["blank"])
    rows = essences(teacher, feats, work, "ctc", blank)
    ce_rows = []
    if a.ce_epochs:
        ce = ce_teacher(feats, work, a.ce_epochs, a.threads)
        ce_rows = essences(ce, feats, work, "ce", None)
    store = str(work / f"ctc-{_tag(Rule('topk', {'k': 4}))}.zarr")
    print("training the student (a, b, c, d interleaved) ...", flush=True)
    fps = throughput(feats, store, s, work, a)
    parts = breakdown(feats, store, s, a)
    load1 = os.getloadavg()[0]

    print(f"\n### Bytes per frame of a teacher's essence: top-k, and p >= {P_MIN} for "
          f"contrast (train split, {rows[0]['frames']:,} frames of {rows[0]['shift_ms']:.0f} "
          f"ms, C = {rows[0]['classes']} with blank)\n")  # fmt: skip
    print("| teacher | rule | kept / frame | frame | indices | values | tail | row offsets | "
          "targets B/frame | store B/frame | store B/s of audio | Kaldi Posterior B/frame | "
          "mean entropy (nats) | mean blank p | spike frames | mean tail mass | "
          "teach frames/s |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, group in (("BLSTM-CTC", rows), ("BLSTM-CE", ce_rows)):
        for r in group:
            print(f"| {name} | {r['rule']} | {r['width']:.2f} | {r['shift_ms']:.0f} ms | "
                  f"{r['indices']:.2f} | {r['values']:.2f} | {r['tail']:.2f} | "
                  f"{r['row_offsets']:.2f} | **{r['targets']:.2f}** | {r['store']:.2f} | "
                  f"{r['store'] * 1000 / r['shift_ms']:.0f} | {10 * r['width'] + 5:.0f} | "
                  f"{r['entropy']:.3f} | {_fmt(r['blank'], '.3f')} | "
                  f"{_fmt(r['spikes'], '.3f')} | {r['tail_mass']:.4f} | "
                  f"{r['teach_fps']:,.0f} |")  # fmt: skip
    k4 = next(r for r in rows if r["k"] == 4)
    print(f"\ndense float32: {4 * k4['classes']} B/frame. Expectation (issue 16): well under "
          f"5 B/frame at k = 4: targets {k4['targets']:.2f}, whole store {k4['store']:.2f} "
          f"({'met' if k4['targets'] < 5 else 'missed'}); indices + values alone (what KD's "
          f"default tail rule, renorm, reads) {k4['indices'] + k4['values']:.2f}; mean top-1 "
          f"probability {k4['top1']:.3f}.")  # fmt: skip

    base = statistics.median(fps["a"])
    timed = len(fps["a"]) // a.rounds
    print(f"\n### CTC training throughput with and without KD (LSTM 2 x 96, subsampling {s}, "
          f"delay 3; {a.rounds} interleaved rounds x {timed} timed epochs)\n")  # fmt: skip
    print("| run | train frames/s (median) | epochs' range | vs plain CTC | target |")
    print("|---|---:|---:|---:|---:|")
    for mode, values in fps.items():
        v = statistics.median(values)
        ratio = v / base
        verdict = "-" if mode == "a" else ">= 0.95: " + ("met" if ratio >= 0.95 else "missed")
        print(f"| ({mode}) {LABEL[mode]} | {v:,.0f} | {min(values):,.0f}-{max(values):,.0f} | "
              f"{ratio:.3f} | {verdict} |")  # fmt: skip
    sec, n = parts["secs"], parts["frames"]
    (pb, pe), (sb, se) = parts["plain_batches"], parts["stream_batches"]
    print(f"\n### Where (b)'s time goes\n\nSteps on held batches (one model, {a.rounds} "
          f"rounds, medians; {n:,} frames per epoch):\n")  # fmt: skip
    print("| what | s per epoch | frames/s | vs a CTC step on the stream's batches |")
    print("|---|---:|---:|---:|")
    names = {
        "plain": f"CTC step, plain CTC's batches ({pb}, {100 * pe:.0f}% real)",
        "ctc": f"CTC step, the stream's batches ({sb}, {100 * se:.0f}% real)",
        "kl": "CTC + KL step, the stream's batches",
        "spikes": "CTC + KL on spike frames, the stream's batches",
        "read": "reading the stream alone (top-4 store + features)",
        "features": "the features alone (FeatureStore.features + CMVN, every utterance)",
        "targets": "the target store alone (StoreReader.read of every id)",
        "rest": "the rest of the read (to the student's rate, collating, read-ahead thread)",
    }
    sec["rest"] = sec["read"] - sec["features"] - sec["targets"]
    for key, name in names.items():
        print(f"| {name} | {sec[key]:.3f} | {n / sec[key]:,.0f} | {sec[key] / sec['ctc']:.3f} |")
    kl_share = (sec["kl"] - sec["ctc"]) / sec["kl"]
    print(f"\nKD term: {100 * kl_share:.1f}% of a CTC + KL step (target < 10%: "
          f"{'met' if kl_share < 0.10 else 'missed'}); on spike frames "
          f"{100 * (sec['spikes'] - sec['ctc']) / sec['spikes']:.1f}%. Reading the stream "
          f"costs {100 * sec['read'] / sec['kl']:.1f}% of a CTC + KL epoch's steps.")  # fmt: skip
    split = phases(parts["parts"], a.rounds)
    total = sum(split.values())
    print(f"\n(b)'s steps taken apart, batches pulled from the stream as the trainer pulls them "
          f"({a.rounds} epochs, medians; {total:.2f} s per epoch, {n / total:,.0f} "
          f"frames/s):\n")  # fmt: skip
    print("| phase | s per epoch | share |")
    print("|---|---:|---:|")
    for name, v in split.items():
        print(f"| {name} | {v:.3f} | {100 * v / total:.1f}% |")
    print(f"\n{os.cpu_count()} CPUs; load average {load0:.1f} at the start, {load1:.1f} at the "
          f"end ({os.getloadavg()}); {a.threads} torch thread(s); "
          f"{time.perf_counter() - t_start:.0f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
