"""Forced alignment speed and quality against the synthetic truth (issue 13).

For each size: ``synth phones --labels aligned`` (transcripts only; the true phones kept in
``reference/``), then ``align_data`` with the default settings (Kaldi's train_mono.sh and
train_deltas.sh: 40 + 35 passes, 2000 leaves) and the corpus's own lexicon, ``--jobs``
workers. Prints per stage the frame phone agreement and the share of true boundaries
within 10 / 20 ms at each realigning pass, the real-time factor per pass (seconds of compute
per second of training audio), and the whole wall time. With ``--realign`` a DNN learns the
triphone alignment (``--epochs``) and realigns the corpus with its pseudo-likelihoods.

    .venv/bin/python benchmarks/align_quality.py --sizes small,medium --jobs 2 [--realign]

Targets (issue 13): triphone frame agreement >= 85% on medium; the whole align of medium
under 15 minutes on 2 cores; the network realignment at least as good as the GMM's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import soundfile as sf

from kdpipe.align.data_dir import align_data
from kdpipe.align.realign import realign_data
from kdpipe.align.truth import read_reference
from kdpipe.corpus.prepare import prepare_corpus
from kdpipe.corpus.synth import PhoneSynthConfig, synth_phones


def run(size: str, work: Path, jobs: int, realign: bool, epochs: int) -> dict:
    src = work / f"phones-{size}-aligned"
    if not (src / "synth.json").is_file():
        cfg = PhoneSynthConfig.for_size(size, labels="aligned")
        synth_phones(src, cfg, jobs=jobs, progress=False, overwrite=True)
    out = work / f"aligned-{size}"
    started = time.perf_counter()
    summary = align_data(
        src,
        out,
        lexicon=src / "lexicon.txt",
        jobs=jobs,
        skip_bad=True,
        overwrite=True,
        log=lambda line: print(f"  {line}", flush=True),
    )
    wall = time.perf_counter() - started
    report = json.loads((out / "align" / "report.json").read_text())
    train_seconds = _train_audio_seconds(src)
    passes = report["passes"]
    result = {
        "size": size,
        "aligned": summary.aligned,
        "skipped": len(summary.skipped),
        "tied_states": summary.num_states,
        "wall_s": round(wall, 1),
        "train_audio_s": round(train_seconds, 1),
        "rtf_per_pass": {  # 0 where this run resumed a finished alignment
            stage: round(
                sum(p["seconds"] for p in passes if p["stage"] == stage)
                / max(1, sum(p["stage"] == stage for p in passes))
                / train_seconds,
                4,
            )
            for stage in ("mono", "tri")
        },
        "mono_last": next(
            (p["agreement"] for p in reversed(passes) if p["stage"] == "mono" and p["agreement"]),
            None,
        ),
        "final": summary.agreement,
    }
    if realign:
        feats = work / f"aligned-{size}.zarr"
        prepare_corpus(out, feats, progress=False, overwrite=True)
        net = work / f"dnn-{size}"
        cmd = [
            sys.executable,
            "-m",
            "kdpipe",
            "learn",
            "--corpus",
            str(feats),
            "--student",
            "dnn",
            "--out",
            str(net),
            "-s",
            f"epochs={epochs}",
            "--overwrite",
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(jobs)}
        subprocess.run(cmd, check=True, env=env, capture_output=True)
        again = realign_data(
            out,
            feats,
            net,
            work / f"realigned-{size}",
            skip_bad=True,
            reference=read_reference(src),
        )
        result["realigned"] = again.agreement
        result["realign_wall_s"] = round(again.seconds, 1)
    return result


def _train_audio_seconds(src: Path) -> float:
    total = 0.0
    for line in (src / "train" / "wav.scp").read_text().splitlines():
        path = Path(line.split(maxsplit=1)[1])  # relative paths are against the corpus root
        total += sf.info(str(path if path.is_absolute() else src / path)).duration
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="small")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("data/bench-align"))
    ap.add_argument("--realign", action="store_true")
    ap.add_argument("--epochs", type=int, default=8)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for size in args.sizes.split(","):
        print(f"== {size}", flush=True)
        print(json.dumps(run(size, args.work, args.jobs, args.realign, args.epochs), indent=1))


if __name__ == "__main__":
    main()
