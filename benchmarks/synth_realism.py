"""What the recording channel of ``kdpipe corpus synth`` costs in synthesis time.

The same small phone corpus (``--utts`` sentences, ``--voices`` voices, ``--jobs``
workers, the default settings otherwise) synthesized plain, with each channel option
alone at probability 1, and with the ``--realism`` preset; each configuration
``--repeats`` times in turn, medians reported, after one warm-up run of each (which also
imports scipy.signal, once per process: its import time is measured apart, in a fresh
interpreter, since a ``synth`` command with any channel effect pays it once).

    python benchmarks/synth_realism.py [--utts 40] [--voices 8] [--jobs 2] [--repeats 3]

Prints a markdown table: seconds, audio seconds synthesized per second, ratio to plain.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kdpipe.corpus.synth import PhoneSynthConfig, synth_phones
from kdpipe.corpus.synth.settings import REALISM

OPTIONS: dict[str, dict[str, Any]] = {
    "plain": {},
    "reverb_prob 1": {"reverb_prob": 1.0},
    "telephone_prob 1 (codecs none/mulaw/adpcm)": {"telephone_prob": 1.0},
    "telephone_prob 1, adpcm only": {"telephone_prob": 1.0, "codecs": ("adpcm",)},
    "speed_prob 1": {"speed_prob": 1.0},
    "tempo_prob 1": {"tempo_prob": 1.0},
    "mic_prob 1": {"mic_prob": 1.0},
    "all five at 1": {name: 1.0 for name in REALISM},
    "--realism": {"realism": True},
}


def scipy_import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import scipy.signal; "
    code += "print(time.perf_counter() - t)"
    done = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utts", type=int, default=40)
    parser.add_argument("--voices", type=int, default=8)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    configs = {}
    for name, options in OPTIONS.items():
        values = {"num_utts": args.utts, "num_voices": args.voices, **options}
        configs[name] = PhoneSynthConfig.for_size("small", **values)
    seconds: dict[str, list[float]] = {name: [] for name in configs}
    audio: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeats + 1):  # round 0: the warm-up
            for name, cfg in configs.items():
                started = time.perf_counter()
                summary = synth_phones(
                    Path(tmp) / "out", cfg, jobs=args.jobs, progress=False, overwrite=True
                )
                if round_:
                    seconds[name].append(time.perf_counter() - started)
                audio[name] = summary.audio_seconds
    plain = statistics.median(seconds["plain"])
    print(
        f"{args.utts} utterances, {args.voices} voices, -j {args.jobs}, median of "
        f"{args.repeats}; scipy.signal import (once per run with any channel effect): "
        f"{scipy_import_seconds():.2f} s\n"
    )
    print("| channel | seconds | audio s / s | x plain |")
    print("| --- | ---: | ---: | ---: |")
    for name, times in seconds.items():
        median = statistics.median(times)
        rate = audio[name] / median
        print(f"| {name} | {median:.2f} | {rate:.0f} | {median / plain:.2f} |")


if __name__ == "__main__":
    main()
