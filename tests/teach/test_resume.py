"""Resumable and parallel: kill -9 and rerun, shards, torchrun, refusing other settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kdpipe.errors import FingerprintMismatch
from kdpipe.essence import Rule
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store
from kdpipe.teach import single_teacher, teach
from kdpipe.testing.stores import assert_same_store, store_values
from kdpipe.testing.teachers import make_teacher, teacher_corpus

HERE = Path(__file__).parent


def _env(**extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def _teach_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "kdpipe", "teach", "--no-progress", *args]


def _committed_parts(store: Path) -> list[Path]:
    return [p for p in store.glob("parts/*/zarr.json") if "kdpipe.part" in p.read_text()]


@pytest.mark.slow
def test_kill_and_resume_equals_uninterrupted(tmp_path, corpus):
    ck = make_teacher(tmp_path / "slow", corpus, "slowteacher:SlowTeacher", seed=5)
    out = tmp_path / "resumed.zarr"
    args = ["--model", str(ck), "--corpus", corpus.location, "--out", str(out), "--topk", "2",
            "--batch-frames", "60", "--part-frames", "30", "--trust-custom-code"]  # fmt: skip
    log = tmp_path / "first-run.log"
    with log.open("wb") as f:
        proc = subprocess.Popen(
            _teach_cmd(*args), env=_env(KDPIPE_TEST_DELAY="0.4"), stdout=f, stderr=f
        )
        deadline = time.monotonic() + 120
        while not _committed_parts(out) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    partial = len(StoreReader(out))
    train = len(corpus.indices("train"))
    assert 0 < partial < train
    rerun = subprocess.run(_teach_cmd(*args), env=_env(), capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({partial} already there)" in rerun.stdout
    ref = tmp_path / "uninterrupted.zarr"
    ens = single_teacher(ck, Rule("topk", {"k": 2}))
    teach(ens, corpus.location, ref, batch_frames=60, trust_custom_code=True, progress=False)
    assert_same_store(store_values(out), store_values(ref))
    idx = corpus.indices("train")
    rep = verify_store(
        out, corpus_ids=[corpus.ids[i] for i in idx], corpus_frames=corpus.num_frames[idx]
    )
    assert rep.ok, rep.errors
    # a third run has nothing left to do and adds nothing
    again = teach(
        ens, corpus.location, out, batch_frames=60, trust_custom_code=True, progress=False
    )
    assert again.utterances == 0 and again.skipped == train and not again.parts


@pytest.mark.slow
def test_torchrun_two_processes_equal_one(tmp_path, corpus, teachers):
    out = tmp_path / "ddp.zarr"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "kdpipe", "teach", "--no-progress", "--model", str(teachers["blstm"]),
        "--corpus", corpus.location, "--out", str(out), "--split", "all", "--topk", "3",
        "--batch-frames", "100", "--device", "cpu",
    ]  # fmt: skip
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "shard 0/2" in r.stdout and "shard 1/2" in r.stdout
    shards = {p.parent.name.split("-")[0] for p in _committed_parts(out)}
    assert shards == {"shard0of2", "shard1of2"}
    ref = tmp_path / "one.zarr"
    teach(single_teacher(teachers["blstm"], Rule("topk", {"k": 3})), corpus.location, ref,
          split=None, batch_frames=100, progress=False)  # fmt: skip
    assert_same_store(store_values(out), store_values(ref))
    v = subprocess.run(
        [sys.executable, "-m", "kdpipe", "store", "verify", str(out), "--corpus", corpus.location],
        env=_env(), capture_output=True, text=True,
    )  # fmt: skip
    assert v.returncode == 0 and "OK" in v.stdout, v.stdout + v.stderr


def test_refuses_other_settings_unless_overwrite(tmp_path, corpus, teachers):
    out = tmp_path / "s.zarr"
    ens3 = single_teacher(teachers["blstm"], Rule("topk", {"k": 3}))
    teach(ens3, corpus.location, out, split="dev", progress=False)
    for ens, split in (
        (single_teacher(teachers["blstm"], Rule("topk", {"k": 2})), "dev"),  # rule
        (single_teacher(teachers["dnn"], Rule("topk", {"k": 3})), "dev"),  # teacher
        (ens3, "train"),  # selection
    ):
        with pytest.raises(FingerprintMismatch, match="other settings"):
            teach(ens, corpus.location, out, split=split, progress=False)
    s = teach(ens, corpus.location, out, split="train", overwrite=True, progress=False)
    assert s.skipped == 0 and len(StoreReader(out)) == len(corpus.indices("train"))


def test_refuses_other_corpus(tmp_path, corpus, teachers):
    other = teacher_corpus(tmp_path / "other.zarr", seed=9)
    out = tmp_path / "s.zarr"
    ens = single_teacher(teachers["blstm"], Rule("topk", {"k": 3}))
    teach(ens, corpus.location, out, split="dev", progress=False)
    with pytest.raises(FingerprintMismatch, match="corpus_fingerprint"):
        teach(ens, other.location, out, split="dev", progress=False)


@pytest.mark.slow
def test_shards_write_one_s3_store(tmp_path, s3_bucket, corpus, teachers):
    """Two uncoordinated shards append to one store on S3; it equals a local run."""
    url = f"{s3_bucket}/targets.zarr"
    ens = single_teacher(teachers["dnn"], Rule("topk", {"k": 2}))
    for i in (0, 1):
        s = teach(ens, corpus.location, url, shard=(i, 2), batch_frames=90, progress=False)
        assert s.utterances > 0 and s.bytes > 0
    local = tmp_path / "local.zarr"
    teach(ens, corpus.location, local, batch_frames=90, progress=False)
    assert_same_store(store_values(url), store_values(local))
    idx = corpus.indices("train")
    rep = verify_store(url, corpus_ids=[corpus.ids[i] for i in idx])
    assert rep.ok, rep.errors
