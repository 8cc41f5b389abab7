"""The README's path from a Kaldi dir with only wav.scp, text and utt2spk to a trained
frame-level teacher: the commands between its ``<!-- newcomer -->`` markers, run as a user
types them (subprocesses), on a small synthetic corpus. Options that only make them fast
enough for a test are appended, named in ``FAST``; nothing else is changed."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from kdpipe.corpus.synth import PhoneSynthConfig, synth_phones

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FAST = {  # per command: options appended for speed only
    "corpus align": ["--config", "{tiny}", "--skip-bad"],
    "learn": ["-s", "epochs=1", "-m", "hidden_dim=32", "-m", "num_layers=1"],
}
TINY = """\
mono: {iterations: 8, realign_at: [1, 2, 3, 4, 5, 6], gaussians: 300, mixup_until: 5}
tri: {iterations: 5, realign_at: [2, 4], gaussians: 600, mixup_until: 3}
num_leaves: 250
tree_min_count: 40
"""


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- newcomer -->", 1)[1].split("<!-- /newcomer -->", 1)[0]
    return [line for line in block.splitlines() if line.startswith("kdpipe ")]


def test_readme_newcomer_path(tmp_path):
    synth = tmp_path / "synth"
    cfg = PhoneSynthConfig.from_dict(
        {
            "seed": 5,
            "num_utts": 200,
            "num_voices": 10,
            "max_words": 5,
            "accents": ["en-us"],
            "labels": "aligned",
        }
    )
    synth_phones(synth, cfg, jobs=2, progress=False)
    corpus = tmp_path / "data" / "mycorpus"
    for split in ("train", "dev", "test"):  # what a newcomer has: three files per split
        (corpus / split).mkdir(parents=True)
        for name in ("text", "utt2spk"):
            shutil.copy(synth / split / name, corpus / split / name)
        lines = (synth / split / "wav.scp").read_text().splitlines()  # paths made absolute
        wavs = [(rec, (synth / path).resolve()) for rec, path in (x.split() for x in lines)]
        (corpus / split / "wav.scp").write_text("".join(f"{r} {p}\n" for r, p in wavs))
    (tmp_path / "tiny.yaml").write_text(TINY)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    commands = readme_commands()
    assert [c.split()[1] for c in commands] == ["corpus", "corpus", "learn", "eval"]
    for line in commands:
        args = shlex.split(line)[1:]
        for key, extra in FAST.items():
            if line.startswith(f"kdpipe {key} "):
                args += [a.format(tiny=tmp_path / "tiny.yaml") for a in extra]
        done = subprocess.run(
            [sys.executable, "-m", "kdpipe", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert done.returncode == 0, f"{line}\n{done.stderr[-3000:]}"
    assert (tmp_path / "data" / "mycorpus-ali" / "train" / "ali.txt").is_file()
    assert (tmp_path / "exp" / "teacher" / "model.safetensors").is_file()
    assert "accuracy" in done.stdout.lower()
