"""Tiny fake corpora and feature stores for tests and benchmarks (generated, never committed).

- ``tone``, ``write_wav``: a noisy sine, and writing it as 16-bit PCM.
- ``make_speech_commands``: a Speech Commands folder of tone clips (one pitch per label).
- ``make_kaldi_dir``: Kaldi data dirs with frame alignments (text or ark) whose audio has a
  different tone per label, so the alignment is learnable; or with transcripts only.
- ``make_kaldi_feats_dir``: Kaldi data dirs of precomputed features (``feats.scp``, optional
  ``cmvn.scp`` per speaker), written with kaldiio, transcripts only.
- ``make_lhotse_corpus``: lhotse manifests (CutSets or recordings + supervisions) of tone
  audio, optionally with features lhotse computed and stored, written with lhotse.
- ``make_hdf5_archive``: an HDF5 feature archive in the layout of ``readers/hdf5.py``.
- ``make_feature_store``: a feature store of random class-dependent features, written
  straight through ``FeatureStoreWriter`` (in memory by default).
- ``make_word_store``: a frame store of transcribed word sequences (labels = their phones)
  with ``lexicon.txt`` beside it, for word graphs.
- ``file_digests``: the sha256 of every file under a folder, to compare two generated corpora.

Every builder is deterministic for a given ``seed``. Shapes: S samples, C channels,
T frames, F mel bins.
"""

from __future__ import annotations

import hashlib
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import h5py
import kaldiio
import numpy as np
import soundfile as sf

from kdpipe.corpus.featstore import FeatureStore, FeatureStoreWriter
from kdpipe.corpus.features import FbankConfig
from kdpipe.labels import LabelSet


def tone(
    freq: float,
    seconds: float,
    sample_rate: int = 16000,
    amplitude: float = 0.5,
    noise: float = 0.01,
    channels: int = 1,
    seed: int = 0,
) -> np.ndarray:
    """A sine of ``freq`` Hz plus white noise: (S,) float32, or (S, C) when ``channels > 1``."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * sample_rate)) / sample_rate  # (S,)
    x = amplitude * np.sin(2 * np.pi * freq * t) + noise * rng.standard_normal(len(t))
    if channels > 1:
        x = np.stack([x * (1 - 0.1 * c) for c in range(channels)], axis=1)  # (S, C)
    return x.astype(np.float32)


def write_wav(path: str | Path, wave: np.ndarray, sample_rate: int = 16000) -> Path:
    """Write (S,) or (S, C) float samples in [-1, 1] as 16-bit PCM."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(p), wave, sample_rate, subtype="PCM_16")
    return p


def make_speech_commands(
    root: str | Path,
    labels: Sequence[str] = ("no", "up", "yes"),
    speakers: Sequence[str] = ("0a1b2c3d", "4e5f6a7b", "8c9d0e1f", "a2b3c4d5"),
    per_speaker: int = 1,
    seconds: float = 0.5,
    sample_rate: int = 16000,
    seed: int = 0,
) -> Path:
    """``root/<label>/<spk>_nohash_<n>.wav`` plus lists: the last speaker is test, the one
    before it dev, the rest train (speaker-disjoint, like the real corpus)."""
    root = Path(root)
    split_of = {s: "train" for s in speakers}
    if len(speakers) >= 3:
        split_of[speakers[-2]], split_of[speakers[-1]] = "dev", "test"
    lists: dict[str, list[str]] = {"dev": [], "test": []}
    k = 0
    for li, label in enumerate(labels):
        for si, spk in enumerate(speakers):
            for n in range(per_speaker):
                rel = f"{label}/{spk}_nohash_{n}.wav"
                amp = 0.3 + 0.1 * si
                write_wav(
                    root / rel,
                    tone(300 + 200 * li, seconds, sample_rate, amp, seed=seed + k),
                    sample_rate,
                )
                k += 1
                if split_of[spk] in lists:
                    lists[split_of[spk]].append(rel)
    (root / "validation_list.txt").write_text("".join(r + "\n" for r in lists["dev"]))
    (root / "testing_list.txt").write_text("".join(r + "\n" for r in lists["test"]))
    write_wav(
        root / "_background_noise_" / "white_noise.wav",
        tone(0, 2.0, sample_rate, 0.0, noise=0.1, seed=seed),
        sample_rate,
    )
    return root


def frame_label_wave(frame_labels: np.ndarray, cfg: FbankConfig, seed: int = 0) -> np.ndarray:
    """(S,) audio whose frame i sounds label ``frame_labels[i]`` (label 0 = quiet noise).

    S is chosen so that ``cfg.num_frames(S) == T`` exactly.
    """
    rng = np.random.default_rng(seed)
    n = len(frame_labels)
    shift, window = cfg.shift_samples, cfg.window_samples
    s = (n - 1) * shift + window if cfg.snip_edges else n * shift
    owner = np.minimum(np.arange(s) // shift, n - 1)  # (S,) frame that owns each sample
    lab = np.asarray(frame_labels)[owner]
    t = np.arange(s) / cfg.sample_rate
    wave = np.where(lab == 0, 0.0, 0.4 * np.sin(2 * np.pi * (200 + 250 * lab) * t))
    return (wave + 0.01 * rng.standard_normal(s)).astype(np.float32)


def random_alignment(num_frames: int, num_labels: int, rng: np.random.Generator) -> np.ndarray:
    """(T,) int32 label runs of 4-12 frames, starting and ending in label 0 (silence)."""
    out = np.zeros(num_frames, dtype=np.int32)
    i = 5
    while i < num_frames - 5:
        run = int(rng.integers(4, 13))
        out[i : min(i + run, num_frames - 5)] = int(rng.integers(1, num_labels))
        i += run
    return out


def make_kaldi_dir(
    root: str | Path,
    splits: Sequence[str] | None = ("train", "dev", "test"),
    utts_per_split: int = 2,
    labels: Sequence[str] = ("sil", "a", "b"),
    frames: tuple[int, int] = (40, 80),
    alignment: str | None = "txt",
    segments: bool = False,
    labels_file: bool = True,
    seed: int = 0,
) -> Path:
    """Kaldi data dirs under ``root``: ``root/<split>/`` for each split, or ``root`` itself
    when ``splits`` is None. Audio in ``root/wav/`` (relative paths in ``wav.scp``).

    ``alignment``: ``txt`` (label names), ``txt-int`` (indices), ``ark`` or ``scp`` (kaldiio
    int vectors), or None: no alignment, a transcribed corpus (``text``: the label names of
    every 10th frame). ``segments=True`` puts each split's utterances in one recording.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    cfg = FbankConfig()
    if labels_file:
        root.mkdir(parents=True, exist_ok=True)
        (root / "labels.txt").write_text("".join(n + "\n" for n in labels))
    dirs: Sequence[str | None] = splits or [None]
    for split in dirs:
        d = root / split if split else root
        d.mkdir(parents=True, exist_ok=True)
        name = split or "all"
        alis: dict[str, np.ndarray] = {}
        waves: dict[str, np.ndarray] = {}
        for i in range(utts_per_split):
            utt = f"{name}-spk{i % 2}-u{i}"
            alis[utt] = random_alignment(int(rng.integers(*frames)), len(labels), rng)
            waves[utt] = frame_label_wave(alis[utt], cfg, seed=int(rng.integers(1 << 30)))
        spk = "".join(f"{u} {u.split('-')[1]}\n" for u in alis)
        (d / "utt2spk").write_text(spk)
        (d / "text").write_text(
            "".join(f"{u} {' '.join(labels[j] for j in a[::10])}\n" for u, a in alis.items())
        )
        if segments:
            rec = f"{name}-rec"
            write_wav(root / "wav" / f"{rec}.wav", np.concatenate(list(waves.values())))
            (d / "wav.scp").write_text(f"{rec} wav/{rec}.wav\n")
            lines, t = [], 0.0
            for u, w in waves.items():
                dur = len(w) / cfg.sample_rate
                lines.append(f"{u} {rec} {t:.4f} {t + dur:.4f}\n")
                t += dur
            (d / "segments").write_text("".join(lines))
        else:
            for u, w in waves.items():
                write_wav(root / "wav" / f"{u}.wav", w)
            (d / "wav.scp").write_text("".join(f"{u} wav/{u}.wav\n" for u in waves))
        _write_alignment(d, alis, labels, alignment)
    return root


def _write_alignment(
    d: Path, alis: dict[str, np.ndarray], labels: Sequence[str], kind: str | None
) -> None:
    if kind is None:
        return
    if kind == "txt":
        (d / "ali.txt").write_text(
            "".join(f"{u} {' '.join(labels[j] for j in a)}\n" for u, a in alis.items())
        )
    elif kind == "txt-int":
        (d / "ali.txt").write_text(
            "".join(f"{u} {' '.join(map(str, a))}\n" for u, a in alis.items())
        )
    elif kind in ("ark", "scp"):
        kaldiio.save_ark(
            str(d / "ali.ark"), alis, scp=str(d / "ali.scp") if kind == "scp" else None
        )
    else:
        raise ValueError(f"alignment must be txt, txt-int, ark or scp: {kind!r}")


WORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")


def _sentence(rng: np.random.Generator, words: int = 4) -> str:
    return " ".join(WORDS[int(i)] for i in rng.integers(0, len(WORDS), size=words))


def cmvn_stats(feats: Sequence[np.ndarray]) -> np.ndarray:
    """Kaldi's CMVN stats (``compute-cmvn-stats``) of (T, D) matrices: (2, D + 1) float64,
    row 0 the sums with the frame count last, row 1 the sums of squares (last column 0)."""
    x = np.concatenate([np.asarray(f, dtype=np.float64) for f in feats])  # (T_all, D)
    stats = np.zeros((2, x.shape[1] + 1), dtype=np.float64)
    stats[0, :-1], stats[0, -1], stats[1, :-1] = x.sum(axis=0), len(x), np.square(x).sum(axis=0)
    return stats


def make_kaldi_feats_dir(
    root: str | Path,
    splits: Sequence[str] | None = ("train", "dev", "test"),
    utts_per_split: int = 4,
    num_speakers: int = 2,
    dim: int = 13,
    frames: tuple[int, int] = (20, 50),
    cmvn: bool = True,
    compress: bool = False,
    seed: int = 0,
) -> Path:
    """Kaldi data dirs of precomputed features under ``root`` (``root/<split>/``, or ``root``
    when ``splits`` is None), transcribed: ``feats.scp`` + ``feats.ark`` of (T, ``dim``)
    float32 matrices with a per-speaker offset (kaldiio; ``compress`` writes Kaldi's
    compressed matrices), ``text``, ``utt2spk``, ``spk2utt`` and, with ``cmvn``, the
    speakers' stats in ``cmvn.scp`` + ``cmvn.ark`` (double matrices, as Kaldi writes them).
    No ``wav.scp``: there is no audio. Scp paths are relative to the data dir's parent."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    dirs: Sequence[str | None] = splits or [None]
    for split in dirs:
        d = root / split if split else root
        d.mkdir(parents=True, exist_ok=True)
        name = split or "all"
        mats: dict[str, np.ndarray] = {}
        spk_of: dict[str, str] = {}
        for i in range(utts_per_split):
            spk = f"{name}-spk{i % num_speakers}"
            utt = f"{spk}-u{i}"  # Kaldi sorts utterances by speaker: ids start with it
            offset = 3.0 * (i % num_speakers + 1)
            t = int(rng.integers(*frames))
            mats[utt] = (offset + rng.normal(size=(t, dim))).astype(np.float32)
            spk_of[utt] = spk
        ark = d / "feats.ark"
        kaldiio.save_ark(
            str(ark), mats, scp=str(d / "feats.scp"), compression_method=2 if compress else None
        )
        _relative_scp(d / "feats.scp", d)
        (d / "text").write_text("".join(f"{u} {_sentence(rng)}\n" for u in mats))
        (d / "utt2spk").write_text("".join(f"{u} {s}\n" for u, s in spk_of.items()))
        speakers = sorted(set(spk_of.values()))
        (d / "spk2utt").write_text(
            "".join(f"{s} {' '.join(u for u in mats if spk_of[u] == s)}\n" for s in speakers)
        )
        if cmvn:  # what compute-cmvn-stats computes from the matrices as stored
            with open(ark, "rb") as f:
                stored = {key: np.asarray(mat) for key, mat in kaldiio.load_ark(f)}
            stats = {s: cmvn_stats([stored[u] for u in mats if spk_of[u] == s]) for s in speakers}
            kaldiio.save_ark(str(d / "cmvn.ark"), stats, scp=str(d / "cmvn.scp"))
            _relative_scp(d / "cmvn.scp", d)
    return root


def _relative_scp(scp: Path, data_dir: Path) -> None:
    """Rewrite an scp that kaldiio wrote with the ark path relative to the data dir's
    parent (``<split>/feats.ark``), as a moved Kaldi setup would have them."""
    lines = []
    for line in scp.read_text().splitlines():
        key, rx = line.split(maxsplit=1)
        ark, _, offset = rx.rpartition(":")
        rel = Path(ark).resolve().relative_to(data_dir.parent.resolve())
        lines.append(f"{key} {rel}:{offset}\n")
    scp.write_text("".join(lines))


def make_lhotse_corpus(
    root: str | Path,
    splits: Sequence[str] | None = ("train", "dev", "test"),
    per_split: int = 3,
    form: str = "cuts",
    features: bool = False,
    seconds: tuple[float, float] = (0.5, 1.0),
    seed: int = 0,
) -> Path:
    """lhotse manifests under ``root``, written by lhotse: per split (``cuts_<split>``, or
    ``cuts`` alone when ``splits`` is None) a ``CutSet`` (``form="cuts"``) or a
    ``recordings_<split>`` + ``supervisions_<split>`` pair (``form="pair"``), all
    ``.jsonl.gz``. Each recording (``root/wav/*.wav``, a tone) has one supervision with a
    speaker and a transcript, which its cut spans (ids: the supervision ids). With
    ``features`` (cuts only), lhotse's own ``Fbank`` (40 bins) stored in ``root/feats.h5``.
    Paths in the manifests are relative to ``root`` (lhotse would read them from there).
    """
    import lhotse  # type: ignore[import-untyped]  # optional and heavy (torch)

    root = Path(root).resolve()
    rng = np.random.default_rng(seed)
    if form not in ("cuts", "pair"):
        raise ValueError(f"form must be cuts or pair: {form!r}")
    names: Sequence[str | None] = splits or [None]
    for split in names:
        name = split or "all"
        recordings, supervisions = [], []
        for i in range(per_split):
            rec_id = f"{name}-rec{i}"
            seconds_i = float(rng.uniform(*seconds))
            wav = write_wav(
                root / "wav" / f"{rec_id}.wav",
                tone(300 + 150 * i, seconds_i, seed=int(rng.integers(1 << 30))),
            )
            recordings.append(lhotse.Recording.from_file(str(wav), recording_id=rec_id))
            start = 0.05
            supervisions.append(
                lhotse.SupervisionSegment(
                    id=f"{name}-spk{i % 2}-u{i}",
                    recording_id=rec_id,
                    start=start,
                    duration=round(seconds_i - 2 * start, 3),
                    text=_sentence(rng),
                    speaker=f"{name}-spk{i % 2}",
                )
            )
        recs = lhotse.RecordingSet.from_recordings(recordings)
        sups = lhotse.SupervisionSet.from_segments(supervisions)
        tail = f"_{split}" if split else ""
        if form == "pair":
            recs = lhotse.RecordingSet.from_recordings(
                [_relative_recording(rec, root) for rec in recs]
            )
            recs.to_file(root / f"recordings{tail}.jsonl.gz")
            sups.to_file(root / f"supervisions{tail}.jsonl.gz")
            continue
        cuts = lhotse.CutSet.from_manifests(recordings=recs, supervisions=sups)
        cuts = cuts.trim_to_supervisions(keep_overlapping=False).to_eager()
        if features:
            with warnings.catch_warnings():  # lhotse's torch fbank warns on newer numpy
                warnings.simplefilter("ignore")
                cuts = cuts.compute_and_store_features(
                    extractor=lhotse.Fbank(lhotse.FbankConfig(num_mel_bins=40)),
                    storage_path=str(root / f"feats{tail}"),
                    storage_type=lhotse.NumpyHdf5Writer,
                    progress_bar=False,
                ).to_eager()
        cuts = lhotse.CutSet.from_cuts([_relative_cut(cut, root) for cut in cuts])
        cuts.to_file(root / f"cuts{tail}.jsonl.gz")
    return root


def _relative_recording(rec: Any, root: Path) -> Any:
    """A lhotse Recording with its file paths relative to ``root``."""
    sources = [replace(src, source=str(Path(src.source).relative_to(root))) for src in rec.sources]
    return replace(rec, sources=sources)


def _relative_cut(cut: Any, root: Path) -> Any:
    """A lhotse cut with its recording's and features' paths relative to ``root``."""
    out = replace(cut, recording=_relative_recording(cut.recording, root))
    if out.features is not None:
        rel = str(Path(out.features.storage_path).relative_to(root))
        out = replace(out, features=replace(out.features, storage_path=rel))
    return out


def _class_features(
    labels: np.ndarray, num_labels: int, dim: int, rng: np.random.Generator, sep: float
) -> np.ndarray:
    """(T, F) float32: a per-class mean (fixed by ``num_labels``/``dim``) plus noise."""
    means = np.random.default_rng(1234 + num_labels * 1000 + dim).normal(size=(num_labels, dim))
    return (5.0 + sep * means[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32)


def make_hdf5_archive(
    path: str | Path,
    task: str = "frame",
    labels: Sequence[str] = ("sil", "a", "b"),
    per_split: dict[str, int] | None = None,
    num_mel_bins: int = 40,
    frames: tuple[int, int] = (30, 60),
    seed: int = 0,
) -> Path:
    """An HDF5 feature archive (layout in ``readers/hdf5.py``). Frame tasks store every
    other alignment as a ``<id>.alignment`` sibling dataset, the rest as attributes."""
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 4, "dev": 2, "test": 2}
    with h5py.File(path, "w") as f:
        f.attrs["labels"] = list(labels)
        f.attrs["num_mel_bins"] = num_mel_bins
        f.attrs["frame_shift_ms"] = 10.0
        f.attrs["sample_rate"] = 16000
        k = 0
        for split, n in per_split.items():
            for i in range(n):
                t = int(rng.integers(*frames))
                utt = f"{split}/utt{i}"
                if task == "frame":
                    lab = random_alignment(t, len(labels), rng)
                else:
                    lab = np.full(t, k % len(labels), dtype=np.int32)
                ds = f.create_dataset(
                    utt, data=_class_features(lab, len(labels), num_mel_bins, rng, 2.0)
                )
                ds.attrs["speaker"] = f"spk{i % 2}"
                ds.attrs["split"] = split
                if task == "clip":
                    ds.attrs["label"] = labels[int(lab[0])]
                elif k % 2:
                    f.create_dataset(utt + ".alignment", data=lab)
                else:
                    ds.attrs["alignment"] = lab
                k += 1
    return Path(path)


def make_feature_store(
    location: str | Path | None = None,
    task: str = "frame",
    labels: Sequence[str] = ("sil", "a", "b", "c"),
    per_split: dict[str, int] | None = None,
    num_mel_bins: int = 40,
    frames: tuple[int, int] = (20, 60),
    cmvn: str = "utterance",
    separation: float = 2.0,
    seed: int = 0,
) -> FeatureStore:
    """A feature store of learnable fake features: each frame is its class mean times
    ``separation`` plus unit noise (offset by +5, like raw log-mels). ``location`` None
    writes it in memory (``memory://`` URL). Returns the opened ``FeatureStore``."""
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 8, "dev": 2, "test": 2}
    location = location or f"memory://kdpipe-dummy-{uuid.uuid4().hex}/feats.zarr"
    cfg = FbankConfig(num_mel_bins=num_mel_bins, cmvn=cmvn)  # type: ignore[arg-type]
    ls = LabelSet(tuple(labels))
    w = FeatureStoreWriter(
        location, task=task, labels=ls, config=cfg, source="dummy", source_format="dummy"
    )
    k = 0
    for split, n in per_split.items():
        for i in range(n):
            t = int(rng.integers(*frames))
            if task == "frame":
                lab = random_alignment(t, len(labels), rng) if t > 12 else np.zeros(t, np.int32)
            else:
                lab = np.full(t, k % len(labels), dtype=np.int32)
            feats = _class_features(lab, len(labels), num_mel_bins, rng, separation)
            w.add(
                f"{split}-u{i}",
                feats,
                speaker=f"spk{i % 3}",
                split=split,
                clip_label=int(lab[0]) if task == "clip" else None,
                frame_labels=lab if task == "frame" else None,
            )
            k += 1
    w.close()
    return FeatureStore.open(location)


def file_digests(root: str | Path) -> dict[str, str]:
    """{path relative to ``root``: sha256 hex digest} of every file under ``root``."""
    root = Path(root)
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


PRONS = {"ab": ("a", "b"), "ba": ("b", "a"), "cab": ("c", "a", "b"), "c": ("c",)}


def make_word_store(
    location: str | Path,
    words: dict[str, tuple[str, ...]] | None = None,
    per_split: dict[str, int] | None = None,
    num_mel_bins: int = 8,
    separation: float = 2.0,
    seed: int = 0,
) -> FeatureStore:
    """A frame store whose labels are the phones of transcribed word sequences: each
    utterance says 2-5 random ``words`` (word -> phones; default ``PRONS``), each phone
    4-9 frames, silence (``sil``, 5 frames) at the edges and, at random, between words;
    the features are class means plus noise (``make_feature_store``'s). Writes
    ``lexicon.txt`` beside the store, as its ``source``."""
    prons = words or PRONS
    rng = np.random.default_rng(seed)
    per_split = per_split or {"train": 24, "dev": 6, "test": 6}
    phones = ("sil", *sorted({p for pron in prons.values() for p in pron}))
    index = {p: i for i, p in enumerate(phones)}
    folder = Path(location).parent
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"{w} {' '.join(pron)}\n" for w, pron in sorted(prons.items())]
    (folder / "lexicon.txt").write_text("".join(lines))
    cfg = FbankConfig(num_mel_bins=num_mel_bins)
    w = FeatureStoreWriter(location, task="frame", labels=LabelSet(phones), config=cfg,
                           source=str(folder), source_format="dummy")  # fmt: skip
    vocabulary = sorted(prons)
    for split, n in per_split.items():
        for i in range(n):
            said = [
                vocabulary[int(k)] for k in rng.integers(len(vocabulary), size=rng.integers(2, 6))
            ]
            frames = [0] * 5
            for j, word in enumerate(said):
                if j and rng.random() < 0.5:
                    frames += [0] * 5
                for phone in prons[word]:
                    frames += [index[phone]] * int(rng.integers(4, 10))
            frames += [0] * 5
            lab = np.array(frames, dtype=np.int32)
            feats = _class_features(lab, len(phones), num_mel_bins, rng, separation)
            w.add(f"{split}-u{i}", feats, speaker=f"spk{i % 3}", split=split,
                  frame_labels=lab, text=" ".join(said))  # fmt: skip
    w.close()
    return FeatureStore.open(location)
