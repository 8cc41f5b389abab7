"""``kdpipe store import``: teacher outputs computed elsewhere, into a target store.

Registered by ``kdpipe.cli.store`` as the ``import`` command (``import_`` here: ``import``
is a Python keyword). Thin: ``kdpipe.teach.imported.import_posteriors`` does the work.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from kdpipe.cli._common import (
    Full,
    Mass,
    Sample,
    Threshold,
    TopK,
    check_number,
    console,
    report_errors,
    written,
)


def import_(
    src: Annotated[
        str,
        typer.Argument(
            help="Teacher outputs: a Kaldi .scp/.ark (or scp:/ark: rspecifier), a folder of "
            ".npy files, or an .h5/.hdf5 file."
        ),
    ],
    out: Annotated[
        str, typer.Option("--out", "-o", help="Target store to write (local path or s3://...).")
    ],
    corpus: Annotated[
        str, typer.Option(help="Feature store of the utterances (`kdpipe corpus prepare`).")
    ],
    kind: Annotated[
        str,
        typer.Option(
            help="What the source holds: logits, log_probs, probs (Kaldi Posterior too) or "
            "loglik (Kaldi pseudo log-likelihoods; needs --priors)."
        ),
    ],
    labels: Annotated[
        Path | None,
        typer.Option(
            help="The teacher's labels (one a line, or Kaldi 'name id'); default: "
            "the corpus' labels."
        ),
    ] = None,
    priors: Annotated[
        Path | None,
        typer.Option(help="--kind loglik: Kaldi vector of class priors (counts or probs)."),
    ] = None,
    format: Annotated[str, typer.Option(help="auto, kaldi, npy or hdf5.")] = "auto",
    split: Annotated[
        str | None,
        typer.Option(
            help="Import only the source utterances in this corpus split (the rest "
            "are skipped); default (or `all`): all."
        ),
    ] = None,
    subsampling: Annotated[
        int | None,
        typer.Option(help="Input frames per source row (default: inferred from the counts)."),
    ] = None,
    topk: TopK = None,
    threshold: Threshold = None,
    mass: Mass = None,
    sample: Sample = None,
    full: Full = False,
    values: Annotated[str, typer.Option(help="Value encoding: uint8 or float16.")] = "uint8",
    part_frames: Annotated[
        int | None, typer.Option(help="Frames per committed store part (default 1M).")
    ] = None,
    threads: Annotated[
        int | None, typer.Option(help="Worker threads (default: the CPUs, at most 4).")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a store made with other settings.")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON line.")
    ] = False,
) -> None:
    """Import teacher posteriors computed elsewhere (Kaldi, NumPy, HDF5) into a target store.

    Every selection rule and value encoding, hard labels from the corpus, resumable (run
    the same command again after a crash); ids, classes and frame counts are checked
    before the work.
    """
    from kdpipe.essence import Rule
    from kdpipe.teach.ensemble_yaml import rule_from_flags
    from kdpipe.teach.imported import import_posteriors

    check_number(subsampling, "--subsampling", low=1)
    check_number(part_frames, "--part-frames", low=1)
    check_number(threads, "--threads", low=1)
    rule = rule_from_flags(topk, threshold, mass, sample, full) or Rule()
    summary = import_posteriors(
        src,
        corpus,
        out,
        kind=kind,
        labels=labels,
        priors=priors,
        rule=rule,
        values=values,
        split=None if split == "all" else split,
        subsampling=subsampling,
        format=format,
        overwrite=overwrite,
        part_frames=part_frames,
        progress=progress,
        threads=threads,
    )
    done = summary.to_dict()
    if json_:
        typer.echo(json.dumps(done))
        return
    acc = "n/a" if done["accuracy"] is None else f"{done['accuracy']:.4f}"
    outside = f", {done['outside_split']:,} outside the split" if done["outside_split"] else ""
    console.print(
        f"[bold]import[/] {done['format']}: {written(done, outside)}; {done['frames']:,} "
        f"{done['level']} rows at subsampling {done['subsampling']}, "
        f"{done['bytes_per_frame']:.1f} bytes/frame, "
        f"{done['seconds']:.1f} s ({done['frames_per_second']:,.0f} frames/s, "
        f"{done['read_mb_per_second']:,.0f} MB/s read), mean entropy "
        f"{done['mean_entropy']:.3f} nats, mean tail mass {done['mean_tail_mass']:.4f}, "
        f"teacher accuracy {acc} -> {out}",
        highlight=False,
        soft_wrap=True,
    )


import_ = report_errors(import_)
