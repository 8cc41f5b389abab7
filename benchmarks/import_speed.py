"""Import throughput of ``kdpipe store import`` vs kaldiio reading the same archive alone.

A Kaldi archive of dense C = 2,000-class float32 log-posteriors (a few hundred utterances,
~200k frames, 1.6 GB; written with kaldiio here) over a matching feature store; in one run,
alternating, ``--repeats`` times (medians reported; the first round warms the page cache
and is dropped):

- **kaldiio alone**: ``for key, mat in kaldiio.load_ark(ark)`` (frames/s, MB/s);
- **import**: ``import_posteriors(ark, ..., kind="log_probs")``, top-8, uint8 values, hard
  labels, into a fresh store (its wall time includes the index pass, hashing the archive
  and writing the store).

Target (the issue): import at least as fast as kaldiio reads, within 20% (ratio >= 0.8).
Then a profile: the milliseconds per 1,000 rows of each stage of one utterance's path, one
thread.

    python benchmarks/import_speed.py [--utts 240] [--frames 200000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np

from kdpipe.essence import Rule
from kdpipe.store.interop.sources import open_source
from kdpipe.store.posteriors import quality
from kdpipe.store.writer import StoreWriter
from kdpipe.teach.imported import _hard, _plan, import_posteriors, to_logprobs
from kdpipe.testing.corpora import make_feature_store

C = 2000
RULE = Rule("topk", {"k": 8})


def make_data(work: Path, utts: int, frames: int, seed: int = 0) -> tuple[Path, str]:
    """A feature store of ``utts`` utterances (~``frames`` frames) and an archive of
    peaked log-posteriors with one row per frame."""
    mean = frames // utts
    fs = make_feature_store(
        work / "feats.zarr", labels=[f"s{i}" for i in range(C)], per_split={"train": utts},
        num_mel_bins=8, frames=(mean * 3 // 4, mean * 5 // 4 + 1), seed=seed,
    )  # fmt: skip
    rng = np.random.default_rng(seed)
    ark = work / "post.ark"
    with kaldiio.WriteHelper(f"ark:{ark}") as w:
        for i, utt_id in enumerate(fs.ids):
            t = int(fs.num_frames[i])
            z = rng.standard_normal((t, C), dtype=np.float32) * 2
            z[np.arange(t), rng.integers(0, C, t)] += 8  # a clear winner per frame
            z -= np.log(np.exp(z).sum(1, keepdims=True))
            w(utt_id, z)
    return ark, fs.location


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def kaldiio_alone(ark: Path) -> tuple[float, float, int]:
    """(wall s, CPU s, frames) of reading the archive with kaldiio."""
    started, cpu = time.perf_counter(), cpu_seconds()
    frames = 0
    for _, mat in kaldiio.load_ark(str(ark)):
        frames += len(mat)
    return time.perf_counter() - started, cpu_seconds() - cpu, frames


def run_import(ark: Path, corpus: str, out: Path, threads: int | None):
    """(summary, CPU s) of one import into a fresh store."""
    shutil.rmtree(out, ignore_errors=True)
    cpu = cpu_seconds()
    summary = import_posteriors(ark, corpus, out, kind="log_probs", rule=RULE,
                                values="uint8", progress=False, threads=threads)  # fmt: skip
    return summary, cpu_seconds() - cpu


def profile(ark: Path, corpus: str, work: Path, utts: int) -> dict[str, float]:
    """Seconds per 1,000 rows of each stage, one thread, over the first ``utts`` utterances."""
    plan = _plan(ark, corpus, kind="log_probs", labels=None, priors=None, rule=RULE,
                 values="uint8", split=None, subsampling=None, format="auto", seed=0,
                 hard_labels=True)  # fmt: skip
    t = dict.fromkeys(["read", "convert", "rule", "quality", "encode+write"], 0.0)
    rows = 0
    writer = StoreWriter(work / "profile.zarr", plan.meta, overwrite=True)
    with open_source(ark) as src:
        for e, i in plan.todo[:utts]:
            a = time.perf_counter()
            x = src.read(e)
            b = time.perf_counter()
            lp = to_logprobs(x, "log_probs", e.where)
            c = time.perf_counter()
            kept = RULE.apply(lp)
            d = time.perf_counter()
            _, columns = quality(lp, None)
            f = time.perf_counter()
            writer.add(e.utt_id, frame=kept, hard_frame=_hard(plan, i), quality=columns)
            g = time.perf_counter()
            for name, dt in zip(t, (b - a, c - b, d - c, f - d, g - f), strict=True):
                t[name] += dt
            rows += len(x)
    g = time.perf_counter()
    writer.close()
    t["encode+write"] += time.perf_counter() - g
    return {name: 1e6 * dt / rows for name, dt in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--utts", type=int, default=240)
    ap.add_argument("--frames", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="import worker threads")
    ap.add_argument("--profile-utts", type=int, default=40)
    ap.add_argument("--work", type=Path, default=None, help="keep the data here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="kdpipe-import-"))
    work.mkdir(parents=True, exist_ok=True)
    ark, corpus = (
        (work / "post.ark", str(work / "feats.zarr"))
        if (work / "post.ark").exists()
        else make_data(work, args.utts, args.frames)
    )
    size = ark.stat().st_size
    runs: dict[str, list[tuple[float, float]]] = {"kaldiio": [], "import": [], "import1": []}
    frames = 0
    summary = None
    for r in range(args.repeats + 1):
        wall, cpu, frames = kaldiio_alone(ark)
        summary, imp_cpu = run_import(ark, corpus, work / "out.zarr", args.threads)
        one, one_cpu = run_import(ark, corpus, work / "out.zarr", 1)
        if r:  # round 0 warms the page cache
            runs["kaldiio"].append((wall, cpu))
            runs["import"].append((summary.seconds, imp_cpu))
            runs["import1"].append((one.seconds, one_cpu))
    assert summary is not None and summary.frames == frames
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in runs.items()}  # fmt: skip
    with open_source(ark) as src:
        hashed = time.perf_counter()
        src.digest()
        hashed = time.perf_counter() - hashed
    mb = size / 1e6
    load = os.getloadavg()[0]
    print(f"archive: {summary.utterances} utterances, {frames:,} frames x {C} classes "
          f"float32, {mb:,.0f} MB; {os.cpu_count()} CPUs, load {load:.1f}")  # fmt: skip
    print(f"{'':26}{'frames/s':>10} {'MB/s':>7} {'CPU s':>7} {'ratio':>6} {'CPU ratio':>9}")
    read_wall, read_cpu = med["kaldiio"]
    names = {"kaldiio": "kaldiio load_ark alone", "import": "import (default threads)",
             "import1": "import (1 thread)"}  # fmt: skip
    for key, (wall, cpu) in med.items():
        print(f"{names[key]:<26}{frames / wall:>10,.0f} {mb / wall:>7,.0f} {cpu:>7.2f} "
              f"{read_wall / wall:>6.3f} {read_cpu / cpu:>9.3f}")  # fmt: skip
    imp = med["import"][0]
    print(f"  hashing the archive (sha256): {hashed:.2f} s of the import's {imp:.2f} s; "
          f"store {summary.bytes_per_frame:.1f} B/frame, {len(summary.parts)} parts")  # fmt: skip
    print(f"target ratio >= 0.8: {'met' if read_wall / imp >= 0.8 else 'missed'}")
    print(f"profile, ms per 1,000 rows, one thread ({args.profile_utts} utterances):")
    for name, ms in profile(ark, corpus, work, args.profile_utts).items():
        print(f"  {name:<28} {ms:8.2f}")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
