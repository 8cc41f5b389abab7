"""``kdpipe store export``: Kaldi, lhotse and NumPy files written, and read back by the real
libraries (Kaldi's binary Posterior by a reader written from Kaldi's source, since kaldiio
cannot read it; by Kaldi's own reader through kaldi_native_io where that is installed)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import kaldiio
import numpy as np
import pytest
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import ConfigError, StoreError
from kdpipe.essence import Rule
from kdpipe.sparse import SparseRows
from kdpipe.store.interop.export import export_store, safe_name
from kdpipe.store.reader import StoreReader
from kdpipe.testing.stores import random_utterances, small_meta, write_store

runner = CliRunner()
ODD_IDS = ("spk/../../escape", ".hidden", "100%/x")  # not file names as they are
RULES = {
    "topk": Rule("topk", {"k": 4}),
    "threshold": Rule("threshold", {"p_min": 0.05}),
    "full": Rule("full", {}),
}


def _utts(meta, n=6, seed=5):
    utts = random_utterances(meta, n, seed=seed, max_frames=12)
    renamed = dict(zip([*ODD_IDS, *list(utts)[len(ODD_IDS) :]], utts.values(), strict=True))
    first = next(iter(renamed.values()))
    first["input_window"] = (3, -1)  # the teacher saw a crop
    return renamed


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """{rule name: path}: frame-level stores of 6 utterances (0-12 frames, odd ids, one
    crop) over 40 classes (12 for the full rule), in 2+ parts; threshold stores float16."""
    root = tmp_path_factory.mktemp("export-stores")
    out = {}
    for name, rule in RULES.items():
        meta = small_meta(
            c=12 if name == "full" else 40,
            rule=rule,
            values="float16" if name == "threshold" else "uint8",
            frame_shift_ms=40.0,
        )
        out[name] = write_store(root / f"{name}.zarr", meta, _utts(meta), part_frames=20).location
    utt_meta = small_meta(levels=("utt",))
    out["utt"] = write_store(root / "utt.zarr", utt_meta, _utts(utt_meta)).location
    return out


def _rows(path, level="frame") -> dict[str, SparseRows]:
    r = StoreReader(path)
    return {u: getattr(r.get(u), level) for u in r.ids}


def _read_posterior(f) -> list[list[tuple[int, float]]]:
    """Kaldi's PosteriorHolder::Read, binary: "\\0B", int32 T, per frame int32 n and n pairs
    (int32, float32); each number after a size byte (WriteBasicType)."""
    assert f.read(2) == b"\0B"

    def basic(kind: str) -> int | float:
        assert f.read(1) == b"\4"
        return struct.unpack("<" + kind, f.read(4))[0]

    frames = []
    for _ in range(int(basic("i"))):
        n = int(basic("i"))
        frames.append([(int(basic("i")), float(basic("f"))) for _ in range(n)])
    return frames


def _read_posterior_scp(scp: Path) -> dict[str, list[list[tuple[int, float]]]]:
    out = {}
    for line in scp.read_text().splitlines():
        key, where = line.split(" ", 1)
        path, offset = where.rsplit(":", 1)
        with open(path, "rb") as f:
            f.seek(int(offset))
            out[key] = _read_posterior(f)
    return out


def _assert_kept(frames, rows: SparseRows, renormalized: bool = False) -> None:
    assert len(frames) == rows.num_rows
    for t, frame in enumerate(frames):
        classes, logprobs = rows.row(t)
        probs = np.exp(logprobs)
        if renormalized:
            probs = probs / probs.sum()
        assert [c for c, _ in frame] == classes.tolist()
        np.testing.assert_allclose([p for _, p in frame], probs, rtol=2e-6)


@pytest.mark.parametrize("rule", list(RULES))
def test_kaldi_posterior_holds_the_kept_entries(stores, tmp_path, rule):
    out = tmp_path / "kaldi"
    rep = export_store(stores[rule], "kaldi", out, progress=False)
    rows = _rows(stores[rule])
    assert (rep.utterances, rep.frames, rep.form) == (
        6,
        sum(len(r) for r in rows.values()),
        "sparse",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "export.json", "labels.txt", "targets.ark", "targets.scp"
    ]  # fmt: skip
    assert rep.files == 4 and rep.bytes == sum(p.stat().st_size for p in out.iterdir())
    assert list(kaldiio.load_scp(str(out / "targets.scp"))) == list(rows)  # kaldiio parses the scp
    got = _read_posterior_scp(out / "targets.scp")
    for u, r in rows.items():
        _assert_kept(got[u], r)
    assert (out / "labels.txt").read_text().split("\n")[:3] == ["c0", "c1", "c2"]
    rec = json.loads((out / "export.json").read_text())
    meta = StoreReader(stores[rule])
    assert rec["store_fingerprint"] == meta.record["fingerprint"]
    assert rec["frame_shift_ms"] == 40.0 and rec["rule"]["name"] == rule
    assert (rec["tail"], rec["cropped_utterances"]) == ("dropped", 1)


def test_kaldi_posterior_is_what_kaldis_own_reader_reads(stores, tmp_path):
    kni = pytest.importorskip("kaldi_native_io")  # Kaldi's table I/O, C++ (optional here)
    export_store(stores["threshold"], "kaldi", tmp_path / "k", progress=False)
    rows = _rows(stores["threshold"])
    with kni.SequentialPosteriorReader(f"scp:{tmp_path / 'k' / 'targets.scp'}") as reader:
        got = dict(reader)
    assert list(got) == list(rows)
    for u, r in rows.items():
        _assert_kept(got[u], r)


def test_kaldi_renormalize_rescales_the_kept_entries(stores, tmp_path):
    export_store(stores["topk"], "kaldi", tmp_path / "k", renormalize=True, progress=False)
    got = _read_posterior_scp(tmp_path / "k" / "targets.scp")
    for u, r in _rows(stores["topk"]).items():
        _assert_kept(got[u], r, renormalized=True)
        for frame in got[u]:
            assert abs(sum(p for _, p in frame) - 1) < 1e-5
    assert json.loads((tmp_path / "k" / "export.json").read_text())["tail"] == "renormalized"


@pytest.mark.parametrize(
    ("rule", "spread"), [("topk", False), ("threshold", True), ("full", False)]
)
def test_kaldi_dense_matrices_equal_densify(stores, tmp_path, rule, spread):
    rep = export_store(
        stores[rule], "kaldi", tmp_path / "k", dense=True, spread_tail=spread, progress=False
    )
    assert rep.form == "dense"
    got = kaldiio.load_scp(str(tmp_path / "k" / "targets.scp"))
    rows = _rows(stores[rule])
    assert list(got) == list(rows)
    for u, r in rows.items():
        mat = got[u]
        assert mat.dtype == np.float32 and mat.shape == (r.num_rows, r.num_classes)
        np.testing.assert_allclose(mat, r.densify(spread_tail=spread), rtol=1e-6, atol=1e-7)
        if spread and len(mat):
            np.testing.assert_allclose(mat.sum(axis=1), 1, atol=0.04)  # uint8/float16 error


def test_utterance_level_is_one_row_per_utterance(stores, tmp_path):
    export_store(stores["utt"], "kaldi", tmp_path / "k", progress=False)
    got = _read_posterior_scp(tmp_path / "k" / "targets.scp")
    for u, r in _rows(stores["utt"], "utt").items():
        assert len(got[u]) == 1
        _assert_kept(got[u], r)
    with pytest.raises(ConfigError, match="has no 'frame' level"):
        export_store(stores["utt"], "npy", tmp_path / "n", level="frame", progress=False)


@pytest.mark.parametrize("rule", ["topk", "threshold"])
def test_lhotse_sparse_cuts_hold_the_targets(stores, tmp_path, rule):
    from lhotse import CutSet

    rep = export_store(stores[rule], "lhotse", tmp_path / "lh", progress=False)
    assert sorted(p.name for p in (tmp_path / "lh").iterdir()) == [
        "cuts.jsonl.gz", "export.json", "labels.txt", "targets.h5"
    ]  # fmt: skip
    cuts = CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz")
    rows = _rows(stores[rule])
    assert [c.id for c in cuts] == list(rows) and rep.utterances == len(rows)
    width = max(int(r.widths().max()) for r in rows.values() if len(r))
    for cut in cuts:
        r = rows[cut.id]
        assert cut.recording is None and cut.duration == pytest.approx(len(r) * 0.04)
        indices, logprobs = cut.load_custom("kd_indices"), cut.load_custom("kd_logprobs")
        assert indices.dtype == np.int32 and logprobs.dtype == np.float32
        np.testing.assert_array_equal(cut.load_custom("kd_tail"), r.tail_logprob())
        if rule == "topk":
            np.testing.assert_array_equal(indices, r.class_ids())
            np.testing.assert_array_equal(logprobs, r.logprobs())
            assert cut.custom["kd_indices"].frame_shift == 0.04
        else:  # padded to the store's widest row: index 0, log-prob -inf
            assert indices.shape == (len(r), width)
            for t in range(len(r)):
                c, lp = r.row(t)
                np.testing.assert_array_equal(indices[t, : len(c)], c)
                np.testing.assert_array_equal(logprobs[t, : len(c)], lp)
                assert (indices[t, len(c) :] == 0).all() and np.isneginf(
                    logprobs[t, len(c) :]
                ).all()
        assert ("kd_input_window" in cut.custom) == (cut.id == ODD_IDS[0])
    if rule == "threshold":
        assert json.loads((tmp_path / "lh" / "export.json").read_text())["padded_width"] == width


def test_lhotse_dense_attached_to_given_cuts(stores, tmp_path):
    from lhotse import CutSet, MonoCut

    rows = _rows(stores["topk"])
    given = CutSet.from_cuts(
        MonoCut(u, start=1.5, duration=len(r) * 0.04, channel=0, custom={"spk": "s1"})
        for u, r in rows.items()
    )
    given.to_file(tmp_path / "given.jsonl.gz")
    export_store(
        stores["topk"], "lhotse", tmp_path / "lh", dense=True, cuts=tmp_path / "given.jsonl.gz",
        progress=False,
    )  # fmt: skip
    cuts = CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz")
    for cut in cuts:
        assert cut.start == 1.5 and cut.custom["spk"] == "s1"
        np.testing.assert_allclose(cut.load_custom("kd_probs"), rows[cut.id].densify(), rtol=1e-6)
    CutSet.from_cuts(list(given)[1:]).to_file(tmp_path / "fewer.jsonl.gz")
    with pytest.raises(
        ConfigError, match=rf"1 store utterance\(s\) have no cut, e.g. {ODD_IDS[0]}"
    ):
        export_store(stores["topk"], "lhotse", tmp_path / "x", cuts=tmp_path / "fewer.jsonl.gz")
    extra = [*given, MonoCut("nobody", start=0, duration=1, channel=0)]
    CutSet.from_cuts(extra).to_file(tmp_path / "more.jsonl.gz")
    with pytest.raises(ConfigError, match=r"1 cut\(s\) have no targets in the store, e.g. nobody"):
        export_store(stores["topk"], "lhotse", tmp_path / "x", cuts=tmp_path / "more.jsonl.gz")
    assert not (tmp_path / "x").exists()


def test_lhotse_utterance_level_takes_durations(stores, tmp_path):
    from lhotse import CutSet

    rows = _rows(stores["utt"], "utt")
    with pytest.raises(ConfigError, match="carry no duration"):
        export_store(stores["utt"], "lhotse", tmp_path / "lh", progress=False)
    durations = {u: 1.25 for u in rows}
    with pytest.raises(ConfigError, match=r"1 store utterance\(s\) are not in the corpus"):
        export_store(
            stores["utt"], "lhotse", tmp_path / "lh", durations=dict(list(durations.items())[1:])
        )
    export_store(stores["utt"], "lhotse", tmp_path / "lh", durations=durations, progress=False)
    for cut in CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz"):
        assert cut.duration == 1.25
        np.testing.assert_array_equal(cut.load_custom("kd_indices"), rows[cut.id].class_ids())
        np.testing.assert_array_equal(cut.load_custom("kd_logprobs"), rows[cut.id].logprobs())


@pytest.mark.parametrize("rule", list(RULES))
def test_npy_files_read_back_equal(stores, tmp_path, rule):
    rows = _rows(stores[rule])
    export_store(stores[rule], "npy", tmp_path / "sparse", progress=False)
    export_store(stores[rule], "npy", tmp_path / "dense", dense=True, progress=False)
    for form, suffix in (("sparse", ".npz"), ("dense", ".npy")):
        names = sorted(p.name for p in (tmp_path / form).iterdir())
        assert names == sorted(
            [*(safe_name(u) + suffix for u in rows), "export.json", "labels.txt"]
        )
        assert sorted(unquote(n[:-4]) for n in names if n.endswith(suffix)) == sorted(rows)
    for u, r in rows.items():
        with np.load(tmp_path / "sparse" / f"{safe_name(u)}.npz") as z:
            np.testing.assert_array_equal(z["indices"], r.class_ids())
            np.testing.assert_array_equal(z["logprobs"], r.logprobs())
            np.testing.assert_array_equal(z["tail"], r.tail_logprob())
            assert ("offsets" in z) == (rule == "threshold")
            if rule == "threshold":
                np.testing.assert_array_equal(z["offsets"], r.offsets)
        dense = np.load(tmp_path / "dense" / f"{safe_name(u)}.npy")
        np.testing.assert_allclose(dense, r.densify(), rtol=1e-6)


def test_odd_ids_stay_inside_the_folder():
    assert safe_name("spk/../../escape") == "spk%2F..%2F..%2Fescape"
    assert safe_name(".hidden") == "%2Ehidden" and safe_name("..") == "%2E."
    assert safe_name("100%/x") == "100%25%2Fx" and unquote(safe_name("é/ü")) == "é/ü"


def test_bad_input_is_one_clear_error(stores, tmp_path):
    store = stores["topk"]
    with pytest.raises(ConfigError, match="unknown export format 'hdf5'"):
        export_store(store, "hdf5", tmp_path / "a")
    with pytest.raises(StoreError, match="store not found"):
        export_store(tmp_path / "nope.zarr", "npy", tmp_path / "a")
    with pytest.raises(ConfigError, match="needs the dense form"):
        export_store(store, "npy", tmp_path / "a", spread_tail=True)
    with pytest.raises(ConfigError, match="with --to lhotse only"):
        export_store(store, "kaldi", tmp_path / "a", durations={})
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="folder is not empty"):
        export_store(store, "npy", busy)
    with pytest.raises(ConfigError, match=r"holds no export\.json"):
        export_store(store, "npy", busy, overwrite=True)
    assert (busy / "mine.txt").read_text() == "keep me"
    export_store(store, "npy", tmp_path / "prev", dense=True, progress=False)
    export_store(store, "kaldi", tmp_path / "prev", overwrite=True, progress=False)  # replaces it
    assert not list((tmp_path / "prev").glob("*.npy"))
    assert (tmp_path / "prev" / "targets.ark").is_file()
    inside = Path(str(store)) / "exp"  # an export inside its own store: refused, nothing made
    with pytest.raises(ConfigError, match="lies inside the input"):
        export_store(store, "npy", inside, progress=False)
    assert not inside.exists()


def test_missing_lhotse_and_a_failed_export_leave_one_line_and_no_files(
    stores, tmp_path, monkeypatch
):
    from kdpipe.store.interop import export

    with pytest.raises(ConfigError, match="unknown level 'clip'"):
        export_store(stores["topk"], "npy", tmp_path / "a", level="clip")
    code = (
        "import sys, kdpipe.store.interop.export, kdpipe.cli.store; print('lhotse' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    monkeypatch.setitem(sys.modules, "lhotse", None)  # import lhotse now raises ImportError
    with pytest.raises(ConfigError, match=r"needs lhotse: pip install 'kdpipe\[lhotse\]'"):
        export_store(stores["topk"], "lhotse", tmp_path / "a")
    assert not (tmp_path / "a").exists()

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(export, "posterior_bytes", broken)
    with pytest.raises(OSError, match="disk full"):
        export_store(stores["topk"], "kaldi", tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "b").mkdir()
    with pytest.raises(OSError, match="disk full"):
        export_store(stores["topk"], "kaldi", tmp_path / "b", progress=False)
    assert (tmp_path / "b").is_dir() and not list((tmp_path / "b").iterdir())


def test_cli_export(stores, tmp_path):
    out = tmp_path / "k"
    r = runner.invoke(app, ["store", "export", stores["topk"], "--to", "kaldi", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "exported 6 utterances" in r.output and "as kaldi to" in r.output
    assert len(_read_posterior_scp(out / "targets.scp")) == 6
    r = runner.invoke(app, ["store", "export", stores["topk"], "--to", "kaldi", "-o", str(out)])
    assert r.exit_code == 1 and "folder is not empty" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["store", "export", stores["topk"], "--to", "csv", "-o", str(out)])
    assert r.exit_code == 1 and "unknown export format 'csv'" in r.output


def test_cli_export_lhotse_with_corpus_durations(stores, tmp_path):
    from lhotse import CutSet

    from kdpipe.corpus.featstore import FeatureStoreWriter
    from kdpipe.corpus.features import FbankConfig

    rows = _rows(stores["utt"], "utt")
    meta = StoreReader(stores["utt"]).meta
    fw = FeatureStoreWriter(
        tmp_path / "f.zarr", task="frame", labels=meta.label_set, config=FbankConfig()
    )
    for i, u in enumerate(rows):
        fw.add(u, np.zeros((10 + i, 40), np.float32), frame_labels=np.zeros(10 + i, np.int64))
    fw.close()
    args = ["store", "export", stores["utt"], "--to", "lhotse", "-o", str(tmp_path / "lh")]
    r = runner.invoke(app, [*args, "--corpus", str(tmp_path / "f.zarr")])
    assert r.exit_code == 0, r.output
    cuts = CutSet.from_file(tmp_path / "lh" / "cuts.jsonl.gz")
    assert [c.duration for c in cuts] == [pytest.approx((10 + i) * 0.01) for i in range(6)]
