"""``inspect``: a summary of a target store, printed with rich and optionally plotted.

``summarize`` reads at most ``max_frames`` frames (from the start, in store order) for the
histograms and confusions; counts and sizes cover the whole store.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kdpipe.store.tables import _level, row_stats

if TYPE_CHECKING:
    from rich.console import Console

    from kdpipe.store.reader import StoreReader

BINS = 20  # histogram bins


def disk_bytes(location: str, storage_options: dict[str, Any] | None = None) -> int:
    """Bytes of all objects under ``location`` (the store on disk or in a bucket)."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(str(location), **(storage_options or {}))
    return int(fs.du(path, total=True))


def summarize(
    reader: StoreReader, *, max_frames: int = 2_000_000, storage_options: dict | None = None
) -> dict[str, Any]:
    """The numbers ``inspect`` shows, as plain data."""
    meta, rec = reader.meta, reader.record
    frames = reader.total_frames
    rows_total = frames if "frame" in meta.levels else len(reader)
    try:
        size = disk_bytes(reader.location, storage_options)
    except (OSError, ValueError, NotImplementedError):
        size = None
    tails: list[np.ndarray] = []
    ents: list[np.ndarray] = []
    conf: dict[int, int] = {}  # hard * C + top1 -> frames
    seen = 0
    c = meta.num_classes
    agree = [0, 0]
    for block in reader.blocks():
        rows, hard, _ = _level(block)
        st = row_stats(rows)
        tails.append(st["tail"])
        ents.append(st["entropy"])
        if hard is not None:
            lab = hard != np.iinfo(hard.dtype).max
            h, t = hard[lab].astype(np.int64), st["top1"][lab]
            agree[0] += int((h == t).sum())
            agree[1] += int(lab.sum())
            keys, counts = np.unique(h[h != t] * c + t[h != t], return_counts=True)
            for k, n in zip(keys.tolist(), counts.tolist(), strict=True):
                conf[k] = conf.get(k, 0) + n
        seen += rows.num_rows
        if seen >= max_frames:
            break
    tail = np.concatenate(tails) if tails else np.zeros(0, np.float32)
    ent = np.concatenate(ents) if ents else np.zeros(0, np.float32)
    emax = max(1e-6, float(np.log(c)))
    names = meta.labels
    top = sorted(conf.items(), key=lambda kv: -kv[1])[:10]
    return {
        "location": reader.location,
        "format": f"{rec['format']} {rec['version']}",
        "created_at": rec.get("created_at"),
        "kdpipe_version": rec.get("kdpipe_version"),
        "fingerprint": rec["fingerprint"],
        "parts": len(reader.parts),
        "uncommitted_parts": len(reader.uncommitted),
        "sealed": reader.sealed,
        "utterances": len(reader),
        "frames": frames,
        "levels": list(meta.levels),
        "bytes": size,
        "bytes_per_frame": None if size is None or not rows_total else size / rows_total,
        "labels": len(names),
        "label_examples": list(names[:8]),
        "rule": str(meta.rule),
        "values": meta.values,
        "hard_labels": list(meta.hard_labels),
        "ctc": meta.extra.get("ctc"),  # a CTC teacher's blank and units; None otherwise
        "members": list(meta.members),
        "teachers": [t.name for t in meta.teachers],
        "frame_shift_ms": meta.frame_shift_ms,
        "subsampling": meta.subsampling,
        "sampled_rows": len(tail),
        "mean_tail": float(tail.mean()) if len(tail) else None,
        "mean_entropy": float(ent.mean()) if len(ent) else None,
        "tail_hist": np.histogram(tail, BINS, (0.0, 1.0))[0].tolist(),
        "entropy_hist": np.histogram(ent, BINS, (0.0, emax))[0].tolist(),
        "entropy_max": emax,
        "top1_agreement": agree[0] / agree[1] if agree[1] else None,
        "confusions": [(names[k // c], names[k % c], n) for k, n in top],
    }


def _bars(counts: list[int], lo: float, hi: float, width: int = 40) -> list[str]:
    counts = np.add.reduceat(np.asarray(counts), np.arange(0, len(counts), 2)).tolist()
    peak = max(counts) or 1
    step = (hi - lo) / len(counts)
    return [
        f"{lo + i * step:6.2f} {'#' * round(width * n / peak):<{width}} {n}"
        for i, n in enumerate(counts)
    ]


def render(s: dict[str, Any], console: Console) -> None:
    """Print a summary from ``summarize``."""
    from rich.table import Table

    t = Table(title=f"target store {s['location']}", show_header=False, title_justify="left")
    bpf = "?" if s["bytes_per_frame"] is None else f"{s['bytes_per_frame']:.2f}"
    rows = [
        ("format", f"{s['format']} (kdpipe {s['kdpipe_version']}, {s['created_at']})"),
        (
            "utterances / frames",
            f"{s['utterances']:,} / {s['frames']:,} ({', '.join(s['levels'])})",
        ),
        (
            "parts",
            f"{s['parts']} committed, {s['uncommitted_parts']} uncommitted"
            + (", sealed" if s["sealed"] else ""),
        ),
        (
            "on disk",
            f"{s['bytes'] or 0:,} bytes, {bpf} bytes per "
            + ("frame" if "frame" in s["levels"] else "clip"),
        ),
        ("label set", f"{s['labels']} labels: {' '.join(s['label_examples'])} ..."),
        ("selection rule", f"{s['rule']}, values {s['values']}"),
        ("teachers", ", ".join(s["teachers"]) or "-"),
        (
            "members / hard labels",
            f"{', '.join(s['members']) or '-'} / {', '.join(s['hard_labels']) or '-'}",
        ),
        ("frame shift / subsampling", f"{s['frame_shift_ms']} ms / {s['subsampling']}"),
    ]
    if s["ctc"] is not None:
        units = s["ctc"].get("units", {})
        tokens = len(units.get("tokens", []))
        what = f"{units.get('units')} units ({tokens} tokens, {units.get('fingerprint')})"
        rows.append(("CTC", f"blank {s['ctc'].get('blank')}, {what}"))
    if s["mean_tail"] is not None:
        rows.append(
            (
                "mean tail / entropy",
                f"{s['mean_tail']:.4f} / {s['mean_entropy']:.3f} "
                f"nats over {s['sampled_rows']:,} rows",
            )
        )
    if s["top1_agreement"] is not None:
        rows.append(("teacher top-1 = hard label", f"{100 * s['top1_agreement']:.2f} %"))
    for k, v in rows:
        t.add_row(k, v)
    console.print(t)
    if s["sampled_rows"]:
        console.print("tail mass histogram", style="bold")
        console.print("\n".join(_bars(s["tail_hist"], 0.0, 1.0)), highlight=False)
        console.print("entropy histogram (nats)", style="bold")
        console.print("\n".join(_bars(s["entropy_hist"], 0.0, s["entropy_max"])), highlight=False)
    if s["confusions"]:
        console.print("top confusions (hard label -> teacher top-1)", style="bold")
        for a, b, n in s["confusions"]:
            console.print(f"  {a} -> {b}: {n}", highlight=False)


def plot(s: dict[str, Any], outdir: str | Path) -> list[Path]:
    """Write the histograms (and confusions) as PNGs into ``outdir``; returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, lo, hi, xlabel in (
        ("tail_hist", 0.0, 1.0, "tail mass"),
        ("entropy_hist", 0.0, s["entropy_max"], "entropy (nats)"),
    ):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        edges = np.linspace(lo, hi, len(s[key]) + 1)
        ax.bar(edges[:-1], s[key], width=np.diff(edges), align="edge")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("rows")
        ax.set_title(f"{xlabel}: {s['location']}", fontsize=9)
        fig.tight_layout()
        paths.append(out / f"{key.removesuffix('_hist')}.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    if s["confusions"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        labels = [f"{a}->{b}" for a, b, _ in s["confusions"]]
        ax.barh(labels[::-1], [n for *_, n in s["confusions"]][::-1])
        ax.set_xlabel("frames")
        ax.set_title("top confusions (hard label -> teacher top-1)", fontsize=9)
        fig.tight_layout()
        paths.append(out / "confusions.png")
        fig.savefig(paths[-1], dpi=100)
        plt.close(fig)
    return paths
