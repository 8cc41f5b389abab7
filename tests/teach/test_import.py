"""``kdpipe store import``: teacher outputs written by kaldiio / numpy / h5py, imported, equal
the store ``kdpipe teach`` writes from the same teacher; resume; bad input is one line."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import kaldiio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kdpipe.cli.main import app
from kdpipe.errors import FingerprintMismatch, StoreError
from kdpipe.essence import Rule
from kdpipe.models import load_checkpoint
from kdpipe.store.interop import sources
from kdpipe.store.interop.export import export_store, posterior_bytes, safe_name
from kdpipe.store.interop.sources import open_source
from kdpipe.store.reader import StoreReader
from kdpipe.store.verify import verify_store
from kdpipe.teach import single_teacher, teach
from kdpipe.teach.imported import import_posteriors
from kdpipe.testing.stores import assert_same_store, store_values
from kdpipe.testing.teachers import LABELS, make_teacher, teacher_corpus

TOP3 = Rule("topk", {"k": 3})
ROOT = Path(__file__).resolve().parents[2]


# -- fixtures: one teacher, its store, its outputs ------------------------------------------


def outputs(ckpt, fs) -> dict[str, np.ndarray]:
    """{id: (T', C) float32 logits} of the checkpoint on each utterance alone."""
    model, _ = load_checkpoint(ckpt)
    out = {}
    with torch.inference_mode():
        for i, u in enumerate(fs.ids):
            x = fs.features(i)
            z, _ = model(torch.from_numpy(x)[None], torch.tensor([len(x)]))
            out[u] = z[0].float().numpy() if z.dim() == 3 else z.float().numpy()  # (T', C)
    return out


def log_softmax(z: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {u: torch.log_softmax(torch.from_numpy(v), -1).numpy() for u, v in z.items()}


@pytest.fixture(scope="module")
def logits(corpus, teachers):
    return outputs(teachers["dnn"], corpus)


@pytest.fixture(scope="module")
def taught(tmp_path_factory, corpus, teachers):
    """Store A: ``kdpipe teach`` of the dnn teacher over the whole corpus, per rule."""
    root = tmp_path_factory.mktemp("taught")
    made = {}

    def get(rule: Rule = TOP3, values: str = "float16") -> Path:
        key = (str(rule), values)
        if key not in made:
            out = root / f"{rule.name}-{len(made)}.zarr"
            ens = single_teacher(teachers["dnn"], rule, values=values)
            teach(ens, corpus.location, out, split=None, progress=False)
            made[key] = out
        return made[key]

    return get


def assert_like_teach(a: Path, b: Path, *, exact_quality: bool = True) -> None:
    """Store B (imported) holds what store A (taught) holds: same ids, class indices and
    hard labels, values within the encoding's precision, quality columns close."""
    ra, rb = StoreReader(a), StoreReader(b)
    assert sorted(ra.ids) == sorted(rb.ids)
    ma, mb = ra.meta.to_dict(), rb.meta.to_dict()
    same = ("labels", "rule", "levels", "values", "hard_labels", "frame_shift_ms",
            "subsampling", "features", "corpus_fingerprint", "combine")  # fmt: skip
    assert {k: ma[k] for k in same} == {k: mb[k] for k in same}
    tol = 0.0315 + 1e-4 if ma["values"] == "uint8" else 0.01
    level = ma["levels"][0]
    qa = {u: k for k, u in enumerate(ra.ids)}
    qb = {u: k for k, u in enumerate(rb.ids)}
    for u in ra.ids:
        x, y = ra.get(u), rb.get(u)
        xa, ya = getattr(x, level), getattr(y, level)
        if xa.indices is not None:
            np.testing.assert_array_equal(xa.indices, ya.indices, err_msg=u)
        if xa.offsets is not None:
            np.testing.assert_array_equal(xa.offsets, ya.offsets, err_msg=u)
        np.testing.assert_allclose(
            np.maximum(xa.logprobs(), -16), np.maximum(ya.logprobs(), -16), atol=tol, err_msg=u
        )
        np.testing.assert_allclose(xa.tail_mass(), ya.tail_mass(), atol=1e-3, err_msg=u)
        hx, hy = getattr(x, f"hard_{level}"), getattr(y, f"hard_{level}")
        assert (hx is None) == (hy is None)
        if hx is not None:
            np.testing.assert_array_equal(hx, hy, err_msg=u)
        for name in ra.quality:
            qx, qy = ra.quality[name][qa[u]], rb.quality[name][qb[u]]
            if exact_quality or name == "agreement":
                np.testing.assert_allclose(qx, qy, atol=1e-4, err_msg=f"{u} {name}")


def write_ark(path: Path, arrays: dict[str, np.ndarray]) -> tuple[Path, Path]:
    ark, scp = path.with_suffix(".ark"), path.with_suffix(".scp")
    kaldiio.save_ark(str(ark), arrays, scp=str(scp))
    return ark, scp


def write_posterior(path: Path, utts: dict[str, list[list[tuple[int, float]]]]) -> Path:
    """A binary Kaldi Posterior archive (kdpipe's writer, byte-identical to Kaldi's)."""
    with open(path, "wb") as f:
        for u, frames in utts.items():
            f.write(u.encode() + b" ")
            flat = [pair for frame in frames for pair in frame]
            f.write(
                posterior_bytes(
                    np.array([c for c, _ in flat], np.int32),
                    np.array([p for _, p in flat], np.float32),
                    np.array([len(frame) for frame in frames]),
                )
            )
    return path


# -- equal to teach ------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["scp", "ark", "rspecifier", "npy", "hdf5"])
def test_dense_sources_equal_teach(tmp_path, corpus, logits, taught, form):
    lp = log_softmax(logits)
    kind = "log_probs"
    if form in ("scp", "ark", "rspecifier"):
        data = logits if form == "ark" else lp
        kind = "logits" if form == "ark" else kind
        ark, scp = write_ark(tmp_path / "out", data)
        src = {"scp": str(scp), "ark": str(ark), "rspecifier": f"scp,p:{scp}"}[form]
    elif form == "npy":
        src = str(tmp_path / "npy")
        Path(src).mkdir()
        for u, v in lp.items():
            np.save(Path(src) / f"{safe_name(u)}.npy", v)
    else:
        src = str(tmp_path / "out.h5")
        with h5py.File(src, "w") as f:
            for u, v in lp.items():
                f[u] = np.exp(v)  # probabilities
        kind = "probs"
    out = tmp_path / "b.zarr"
    s = import_posteriors(src, corpus.location, out, kind=kind, rule=TOP3, values="float16",
                          progress=False)  # fmt: skip
    assert_like_teach(taught(), out)
    assert s.utterances == len(corpus) and s.skipped == 0 and s.frames == corpus.num_frames.sum()
    assert s.accuracy is not None and s.mean_entropy > 0 and 0 < s.mean_tail_mass < 1
    meta = StoreReader(out).meta
    (teacher,) = meta.teachers
    assert teacher.card["kind"] == "imported" and teacher.card["value_kind"] == kind
    assert teacher.card["source"] == src and meta.extra["import"]["selection"]["split"] is None
    assert len(teacher.weights_sha256) == 64
    rep = verify_store(out, corpus_ids=corpus.ids, corpus_frames=corpus.num_frames)
    assert rep.ok, rep.errors


@pytest.mark.parametrize(
    ("rule", "values"),
    [
        (Rule("threshold", {"p_min": 0.05}), "uint8"),
        (Rule("cumulative", {"mass": 0.9}), "float16"),
        (Rule("sample", {"n": 4}), "uint8"),
        (Rule("full", {}), "float16"),
        (Rule("topk", {"k": 2}), "uint8"),
    ],
)
def test_every_rule_and_encoding_equals_teach(tmp_path, corpus, logits, taught, rule, values):
    _, scp = write_ark(tmp_path / "lp", log_softmax(logits))
    out = tmp_path / "b.zarr"
    import_posteriors(scp, corpus.location, out, kind="log_probs", rule=rule, values=values,
                      progress=False, threads=2)  # fmt: skip
    assert_like_teach(taught(rule, values), out)


def test_kaldi_posterior_of_the_topk_equals_teach(tmp_path, corpus, taught):
    """Store A exported as a Kaldi Posterior archive (its top-3, not renormalised),
    imported as probabilities: the missing mass becomes the tail again."""
    a = taught()
    export_store(a, "kaldi", tmp_path / "kaldi", progress=False)
    out = tmp_path / "b.zarr"
    src = tmp_path / "kaldi" / "targets.scp"
    import_posteriors(src, corpus.location, out, kind="probs", rule=TOP3, values="float16",
                      progress=False)  # fmt: skip
    assert_like_teach(a, out, exact_quality=False)  # entropy: of the kept entries only
    assert StoreReader(out).meta.teachers[0].card["holds"] == ["posterior"]
    with pytest.raises(Exception, match="give --kind probs"):
        import_posteriors(src, corpus.location, tmp_path / "c.zarr", kind="log_probs",
                          progress=False)  # fmt: skip


def test_a_posterior_archive_written_by_kaldis_own_writer(tmp_path, corpus, taught):
    """The same top-3 as a Posterior archive written by Kaldi's table code
    (kaldi_native_io's C++ PosteriorWriter, what copy-post writes) imports as store A."""
    kni = pytest.importorskip("kaldi_native_io")
    a = StoreReader(taught())
    ark, scp = tmp_path / "post.ark", tmp_path / "post.scp"
    with kni.PosteriorWriter(f"ark,scp:{ark},{scp}") as writer:
        for uid in a.ids:
            rows = a.get(uid).frame
            probs = np.exp(rows.logprobs().astype(np.float64))  # (T, 3)
            writer.write(uid, [[(int(c), float(p)) for c, p in zip(ix, pr, strict=True)]
                               for ix, pr in zip(rows.indices, probs, strict=True)])  # fmt: skip
    out = tmp_path / "b.zarr"
    import_posteriors(scp, corpus.location, out, kind="probs", rule=TOP3, values="float16",
                      progress=False)  # fmt: skip
    assert_like_teach(taught(), out, exact_quality=False)


@pytest.mark.parametrize("text", ["kaldi", "lines"])
def test_loglik_with_priors_equals_teach(tmp_path, corpus, logits, taught, text):
    counts = np.array([50.0, 10, 20, 5, 15])  # counts, not probabilities: normalised
    log_prior = np.log(counts / counts.sum())
    loglik = {u: (v - log_prior).astype(np.float32) for u, v in log_softmax(logits).items()}
    ark, _ = write_ark(tmp_path / "loglik", loglik)
    priors = tmp_path / "priors.vec"
    body = " ".join(f"{c:g}" for c in counts)
    priors.write_text(f" [ {body} ]\n" if text == "kaldi" else body.replace(" ", "\n") + "\n")
    out = tmp_path / "b.zarr"
    import_posteriors(ark, corpus.location, out, kind="loglik", priors=priors, rule=TOP3,
                      values="float16", progress=False)  # fmt: skip
    assert_like_teach(taught(), out)
    card = StoreReader(out).meta.teachers[0].card
    assert card["priors"]["sha256"] == hashlib.sha256(priors.read_bytes()).hexdigest()


def test_subsampling_inferred_and_rows_fitted(tmp_path, corpus, teachers):
    """A teacher with subsampling 2: inferred from the row counts; rows off by one are
    trimmed or padded with the last row, as teach does; hard labels at frame j*2."""
    ref = tmp_path / "a.zarr"
    teach(single_teacher(teachers["tdnn"], TOP3, values="float16"), corpus.location, ref,
          split=None, progress=False)  # fmt: skip
    lp = log_softmax(outputs(teachers["tdnn"], corpus))
    _, scp = write_ark(tmp_path / "lp", lp)
    out = tmp_path / "b.zarr"
    s = import_posteriors(scp, corpus.location, out, kind="log_probs", rule=TOP3,
                          values="float16", progress=False)  # fmt: skip
    assert s.subsampling == 2 and StoreReader(out).meta.subsampling == 2
    assert StoreReader(out).meta.extra["import"]["subsampling_inferred"]
    assert_like_teach(ref, out)
    first, second = corpus.ids[0], corpus.ids[1]
    off = dict(lp)
    off[first] = np.concatenate([lp[first], lp[first][-1:] * 0 - np.log(5)])  # one more row
    off[second] = lp[second][:-1]  # one fewer
    _, scp = write_ark(tmp_path / "off", off)
    out2 = tmp_path / "c.zarr"
    s = import_posteriors(scp, corpus.location, out2, kind="log_probs", rule=TOP3,
                          values="float16", subsampling=2, progress=False)  # fmt: skip
    assert (s.trimmed, s.padded) == (1, 1)
    r, r2 = StoreReader(out), StoreReader(out2)
    np.testing.assert_array_equal(r.get(first).frame.indices, r2.get(first).frame.indices)
    pad = r2.get(second).frame.indices
    np.testing.assert_array_equal(pad[-1], pad[-2])
    np.testing.assert_array_equal(pad[:-1], r.get(second).frame.indices[:-1])


def test_clip_corpus_is_utterance_level(tmp_path):
    fs = teacher_corpus(tmp_path / "clips.zarr", task="clip", per_split={"train": 6})
    ck = make_teacher(tmp_path / "cnn", fs, "cnn")
    ref = tmp_path / "a.zarr"
    teach(single_teacher(ck, Rule("topk", {"k": 2}), values="float16"), fs.location, ref,
          split=None, progress=False)  # fmt: skip
    h5 = tmp_path / "clips.h5"
    with h5py.File(h5, "w") as f:
        for u, z in outputs(ck, fs).items():
            f[u] = z.reshape(1, -1)  # (1, C): one row per clip
    out = tmp_path / "b.zarr"
    s = import_posteriors(h5, fs.location, out, kind="logits", rule=Rule("topk", {"k": 2}),
                          values="float16", progress=False)  # fmt: skip
    assert s.level == "utt" and StoreReader(out).meta.levels == ("utt",)
    assert StoreReader(out).meta.hard_labels == ("utt",)
    assert_like_teach(ref, out)


def test_split_and_label_files(tmp_path, corpus, logits):
    _, scp = write_ark(tmp_path / "lp", log_softmax(logits))
    out = tmp_path / "dev.zarr"
    table = tmp_path / "pdfs.txt"  # a Kaldi symbol table of the corpus' labels
    table.write_text("".join(f"{name} {i}\n" for i, name in enumerate(LABELS)))
    s = import_posteriors(scp, corpus.location, out, kind="log_probs", split="dev",
                          labels=table, rule=TOP3, progress=False)  # fmt: skip
    dev = [corpus.ids[i] for i in corpus.indices("dev")]
    assert sorted(StoreReader(out).ids) == sorted(dev)
    assert (s.utterances, s.outside_split, s.not_in_source) == (len(dev), 10, 0)
    assert StoreReader(out).meta.hard_labels == ("frame",)
    other = tmp_path / "other.txt"  # the teacher's own label names: no corpus hard labels
    other.write_text("".join(f"pdf{i}\n" for i in range(len(LABELS))))
    s = import_posteriors(scp, corpus.location, tmp_path / "pdf.zarr", kind="log_probs",
                          labels=other, rule=TOP3, progress=False)  # fmt: skip
    meta = StoreReader(tmp_path / "pdf.zarr").meta
    assert meta.labels[0] == "pdf0" and meta.hard_labels == () and s.accuracy is None


# -- resume --------------------------------------------------------------------------------


def test_failure_midway_then_rerun_equals_uninterrupted(tmp_path, corpus, logits, monkeypatch):
    _, scp = write_ark(tmp_path / "lp", log_softmax(logits))
    kw = {"kind": "log_probs", "rule": TOP3, "part_frames": 60, "progress": False}
    ref = tmp_path / "ref.zarr"
    import_posteriors(scp, corpus.location, ref, threads=1, **kw)
    out = tmp_path / "resumed.zarr"
    real = sources.KaldiScpSource._read
    calls = {"n": 0}

    def flaky(self, entry):
        calls["n"] += 1
        if calls["n"] > 8:
            raise StoreError(f"{entry.where}: disk went away")
        return real(self, entry)

    monkeypatch.setattr(sources.KaldiScpSource, "_read", flaky)
    with pytest.raises(StoreError, match="disk went away"):
        import_posteriors(scp, corpus.location, out, threads=3, **kw)
    monkeypatch.undo()
    partial = len(StoreReader(out))
    assert 0 < partial <= 8  # those read before the failure, up to the last part
    s = import_posteriors(scp, corpus.location, out, threads=2, **kw)
    assert s.skipped == partial and s.utterances == len(corpus) - partial
    assert_same_store(store_values(ref), store_values(out))
    again = import_posteriors(scp, corpus.location, out, **kw)
    assert again.utterances == 0 and again.skipped == len(corpus) and not again.parts
    assert again.before == again.total == len(corpus)  # the store's total, not this run's
    assert s.before == partial and s.total == len(corpus)
    assert again.source_bytes == 0  # committed utterances are not read


def test_bad_utterance_midway_keeps_what_went_before(tmp_path, corpus, logits):
    lp = log_softmax(logits)
    bad = dict(lp)
    late = corpus.ids[9]
    bad[late] = lp[late].copy()
    bad[late][3, 1] = np.nan
    _, scp = write_ark(tmp_path / "bad", bad)
    out = tmp_path / "s.zarr"
    kw = {"kind": "log_probs", "rule": TOP3, "part_frames": 40, "progress": False}
    with pytest.raises(StoreError, match=f"utterance {late} in .*bad.ark: row 3: NaN"):
        import_posteriors(scp, corpus.location, out, threads=2, **kw)
    kept = StoreReader(out).ids
    assert kept and late not in kept and set(kept) <= set(corpus.ids[:9])
    _, good = write_ark(tmp_path / "good", lp)  # another file: another teacher hash
    with pytest.raises(FingerprintMismatch, match="teachers"):
        import_posteriors(good, corpus.location, out, **kw)
    import_posteriors(good, corpus.location, out, overwrite=True, **kw)
    assert len(StoreReader(out)) == len(corpus)


# -- the formats ------------------------------------------------------------------------------


def test_kaldi_forms_and_what_kaldiio_reads(tmp_path):
    rng = np.random.default_rng(0)
    mats = {f"u{i}": rng.standard_normal((4 + i, 3)).astype(np.float32) for i in range(3)}
    kaldiio.save_ark(str(tmp_path / "t.ark"), mats, text=True)
    kaldiio.save_ark(str(tmp_path / "c.ark"), mats, scp=str(tmp_path / "c.scp"),
                     compression_method=2)  # fmt: skip
    kaldiio.save_ark(str(tmp_path / "d.ark"), {u: m.astype(np.float64) for u, m in mats.items()})
    kaldiio.save_ark(str(tmp_path / "v.ark"), {u: m[0] for u, m in mats.items()})  # vectors
    for name, atol in [("t.ark", 1e-5), ("c.ark", 0.05), ("c.scp", 0.05), ("d.ark", 0)]:
        with open_source(tmp_path / name) as src:
            assert src.ids == list(mats) and [e.rows for e in src.entries] == [4, 5, 6]
            for u, m in src:
                np.testing.assert_allclose(m, mats[u], atol=atol, err_msg=name)
    with open_source(tmp_path / "v.ark") as src:
        assert [e.rows for e in src.entries] == [1, 1, 1]
        assert all(m.shape == (1, 3) for _, m in src)
    # scp row ranges (inclusive, as in Kaldi)
    scp = tmp_path / "r.scp"
    line = (tmp_path / "c.scp").read_text().splitlines()[2]
    scp.write_text(line + "[1:3]\n")
    with open_source(scp) as src:
        (entry,) = src.entries
        assert entry.rows == 3
        np.testing.assert_allclose(src.read(entry), mats["u2"][1:4], atol=0.05)
    # kaldiio has no Posterior type: it reads the header as an int32 vector's
    post = write_posterior(tmp_path / "p.ark", {"a": [[(0, 0.5), (2, 0.5)], [(1, 1.0)]]})
    with open(post, "rb") as f:
        _, wrong = next(iter(kaldiio.load_ark(f)))
    assert wrong.dtype == np.int32 and wrong.shape == (2,)  # two raw numbers, not posteriors
    with open_source(post) as src:
        (entry,) = src.entries
        assert entry.holds == sources.POSTERIOR and entry.rows == 2 and entry.classes is None
        dense = src.read(entry).dense(3, "here")
        np.testing.assert_allclose(dense, [[0.5, 0, 0.5], [0, 1, 0]])


def test_digest_is_sha256sum(tmp_path):
    arrays = {"a": np.ones((2, 3), np.float32), "b": np.zeros((1, 3), np.float32)}
    ark, scp = write_ark(tmp_path / "x", arrays)
    with open_source(ark) as src:
        assert src.digest() == hashlib.sha256(ark.read_bytes()).hexdigest()
    with open_source(scp) as src:
        lines = "".join(
            f"{hashlib.sha256(Path(p).read_bytes()).hexdigest()}  {p}\n" for p in (scp, ark)
        )
        assert src.digest() == hashlib.sha256(lines.encode()).hexdigest()


# -- bad input: one line, before the work where the index tells ------------------------------


def invoke(*args):
    """``kdpipe store import ARGS`` through the real CLI."""
    return CliRunner().invoke(app, ["store", "import", "--no-progress", *map(str, args)])


def one_line_error(r, *fragments: str) -> None:
    assert r.exit_code == 1 and isinstance(r.exception, SystemExit), r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    for f in fragments:
        assert f in " ".join(r.output.split()), r.output


def test_cli_imports(tmp_path, corpus, logits):
    _, scp = write_ark(tmp_path / "lp", log_softmax(logits))
    out = tmp_path / "s.zarr"
    r = invoke(scp, "--out", out, "--corpus", corpus.location, "--kind", "log_probs",
               "--mass", "0.9", "--values", "float16")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (
        f"{len(corpus)} utterances written (0 already there), the store holds {len(corpus)}"
        in r.output
    )
    assert "(0 before this run)" in r.output and "frames/s" in r.output
    assert StoreReader(out).meta.rule.name == "cumulative"
    r = invoke(scp, "--out", out, "--corpus", corpus.location, "--kind", "log_probs",
               "--mass", "0.9", "--values", "float16", "--json")  # fmt: skip
    assert r.exit_code == 0 and '"skipped": 13' in r.output, r.output


def _bad_sources(tmp_path: Path, lp: dict[str, np.ndarray]) -> dict[str, list[str]]:
    """name -> extra CLI args (the source first) of each bad import."""
    first = next(iter(lp))
    extra = {**lp, "nope-u1": lp[first]}
    _, missing_ids = write_ark(tmp_path / "ids", extra)
    long = {**lp, first: np.concatenate([lp[first]] * 2)}
    _, frames = write_ark(tmp_path / "frames", long)
    _, classes = write_ark(tmp_path / "classes", {u: v[:, :4] for u, v in lp.items()})
    nan = {**lp, first: lp[first].copy()}
    nan[first][2, 0] = np.nan
    _, nans = write_ark(tmp_path / "nan", nan)
    frames_of = {u: [[(int(np.argmax(row)), 1.0)] for row in v] for u, v in lp.items()}
    out_of_range = {**frames_of, first: [[(7, 1.0)]] * len(lp[first])}
    negative = {**frames_of, first: [[(1, -0.5)]] * len(lp[first])}
    post_range = write_posterior(tmp_path / "range.ark", out_of_range)
    post_negative = write_posterior(tmp_path / "negative.ark", negative)
    posteriors = write_posterior(tmp_path / "post.ark", frames_of)
    return {
        "missing ids": [missing_ids, "--kind", "logits"],
        "frames": [frames, "--kind", "logits"],
        "classes": [classes, "--kind", "logits"],
        "nan": [nans, "--kind", "log_probs"],
        "posterior range": [post_range, "--kind", "probs"],
        "posterior negative": [post_negative, "--kind", "probs"],
        "posterior kind": [posteriors, "--kind", "logits"],
        "loglik": [missing_ids, "--kind", "loglik"],
        "priors": [posteriors, "--kind", "probs", "--priors", tmp_path / "p.txt"],
        "kind": [posteriors, "--kind", "posteriors"],
        "no source": [tmp_path / "nothere.scp", "--kind", "logits"],
        "no format": [tmp_path / "ids.ark.bak", "--kind", "logits"],
        "rule": [frames, "--kind", "logits", "--topk", "2", "--full"],
    }


BEFORE_WORK = {
    "missing ids": ["1 of its 14 utterances are not in the corpus", "e.g. nope-u1"],
    "frames": ["utterance train-u0:", "rows, but its", "tolerance 2"],
    "classes": ["classes.ark: utterance train-u0 has 4 classes; the label set", "has 5"],
    "posterior negative": ["utterance train-u0 in", "negative.ark: frame 0: probability -0.5"],
    "posterior kind": ["holds Kaldi Posterior entries", "give --kind probs"],
    "loglik": ["--kind loglik needs --priors"],
    "priors": ["--priors goes with --kind loglik"],
    "kind": ["unknown --kind 'posteriors'"],
    "no source": ["source not found:", "nothere.scp"],
    "no format": ["cannot tell the source format", "give --format"],
    "rule": ["at most one of"],
}
DURING_WORK = {
    "nan": ["utterance train-u0 in", "nan.ark: row 2: NaN in the log_probs"],
    "posterior range": ["range.ark: frame 0: class index 7 out of range [0, 5)"],
}


@pytest.mark.parametrize("case", sorted({**BEFORE_WORK, **DURING_WORK}))
def test_bad_input_is_one_line(tmp_path, corpus, logits, case):
    lp = log_softmax(logits)
    (tmp_path / "ids.ark.bak").write_bytes(b"")
    args = _bad_sources(tmp_path, lp)[case]
    out = tmp_path / "s.zarr"
    rule = [] if case == "rule" else ["--topk", "3"]  # (the default top-8 > 5 labels)
    r = invoke(args[0], "--out", out, "--corpus", corpus.location, *args[1:], *rule)
    one_line_error(r, *({**BEFORE_WORK, **DURING_WORK}[case]))
    if case in BEFORE_WORK:
        assert not out.exists()  # refused before any work


def test_existing_store_of_other_settings(tmp_path, corpus, logits):
    _, scp = write_ark(tmp_path / "lp", log_softmax(logits))
    out = tmp_path / "s.zarr"
    common = [scp, "--out", out, "--corpus", corpus.location, "--kind", "log_probs"]
    assert invoke(*common, "--topk", "3").exit_code == 0
    one_line_error(invoke(*common, "--topk", "2"), "other settings", "differs in: rule")
    r = invoke(*common, "--topk", "2", "--overwrite")
    assert r.exit_code == 0 and StoreReader(out).meta.rule.params == {"k": 2}, r.output


def test_cli_module_imports_nothing_heavy():
    code = (
        "import sys, kdpipe.cli.store_import; "
        "print(sorted(m for m in ('torch', 'zarr', 'h5py', 'kaldiio') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_to_logprobs_each_kind():
    from kdpipe.teach.import_plan import to_logprobs

    rng = np.random.default_rng(3)
    z = rng.standard_normal((6, 5)).astype(np.float32) * 3
    ref = z - np.log(np.exp(z.astype(np.float64)).sum(1, keepdims=True))  # (6, 5)
    np.testing.assert_allclose(to_logprobs(z, "logits", "u"), ref, atol=2e-6)
    np.testing.assert_allclose(to_logprobs(ref + 1.5, "log_probs", "u"), ref, atol=2e-6)
    prior = np.log(np.array([0.1, 0.2, 0.3, 0.25, 0.15]))
    np.testing.assert_allclose(to_logprobs(ref - prior, "loglik", "u", prior), ref, atol=2e-6)
    np.testing.assert_allclose(to_logprobs(np.exp(ref), "probs", "u"), ref, atol=2e-6)
    sparse = ref.copy()
    sparse[:, 0] = -np.inf  # probability 0 is fine in log_probs and probs...
    assert np.isneginf(to_logprobs(sparse, "log_probs", "u")[:, 0]).all()
    assert np.isneginf(to_logprobs(np.exp(sparse), "probs", "u")[:, 0]).all()
    with pytest.raises(StoreError, match="u: row 0: -inf in logits"):  # ...not in logits
        to_logprobs(sparse, "logits", "u")
    with pytest.raises(StoreError, match="row 0: probabilities sum to 2"):
        to_logprobs(np.exp(ref) * 2, "probs", "u")
    pruned = np.exp(ref) * 0.5  # a pruned posterior: not renormalised (the tail keeps it)
    np.testing.assert_allclose(to_logprobs(pruned, "probs", "u"), ref + np.log(0.5), atol=2e-6)
