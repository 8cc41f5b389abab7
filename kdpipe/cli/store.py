"""``kdpipe store``: inspect, verify, copy, compare and seal target stores.

STORE is a local path or an fsspec URL (``s3://bucket/targets.zarr``, ``gs://...``,
``https://...`` read-only). Credentials and endpoints come from the usual environment
variables, which s3fs/botocore read themselves: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_PROFILE``
and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for MinIO, Ceph or moto.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdpipe.cli._common import check_number, console, err_console, report_errors
from kdpipe.cli.store_import import import_

app = typer.Typer(
    help="Inspect, verify, copy and compare target stores (local paths or fsspec URLs).",
    no_args_is_help=True,
)

StoreArg = Annotated[str, typer.Argument(help="Store: a local path or an fsspec URL.")]


@app.command()
@report_errors
def inspect(
    store: StoreArg,
    plot: Annotated[
        Path | None, typer.Option(help="Write tail/entropy/confusion PNGs into this folder.")
    ] = None,
    max_frames: Annotated[int, typer.Option(help="Frames read for the histograms.")] = 2_000_000,
) -> None:
    """Summarise a store: size, label set, teachers, rule, tail and entropy histograms."""
    from kdpipe.store.reader import StoreReader
    from kdpipe.store.summary import plot as plot_summary
    from kdpipe.store.summary import render, summarize

    check_number(max_frames, "--max-frames", low=1)
    summary = summarize(StoreReader(store), max_frames=max_frames)
    render(summary, console)
    if plot is not None:
        for path in plot_summary(summary, plot):
            console.print(f"wrote {path}", highlight=False, soft_wrap=True)


def _corpus(location: str, split: str | None = None) -> tuple[list[str], list[int], str]:
    """Ids, input frame counts and fingerprint of a feature store; ``split`` restricts the
    ids to one split (None or ``all``: every utterance, as ``teach --split all``)."""
    from kdpipe.corpus.featstore import FeatureStore

    features = FeatureStore.open(location)
    index = features.indices(None if split == "all" else split).tolist()
    ids = [features.ids[i] for i in index]
    frames = [int(features.num_frames[i]) for i in index]
    return ids, frames, features.fingerprint


@app.command()
@report_errors
def verify(
    store: StoreArg,
    corpus: Annotated[
        str | None, typer.Option(help="Feature store the targets must cover exactly.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option(help="With --corpus: the store covers this split only (`all`: everything)."),
    ] = None,
    labels: Annotated[
        Path | None, typer.Option(help="Label file (one per line) the store must match.")
    ] = None,
    frame_tolerance: Annotated[
        int | None, typer.Option(help="Allowed |frames - input frames / subsampling|.")
    ] = None,
) -> None:
    """Check checksums, shapes, ranges, sums and coverage; exit 1 on any error."""
    from kdpipe.labels import LabelSet
    from kdpipe.store.verify import verify_store

    check_number(frame_tolerance, "--frame-tolerance", low=0)
    ids: list[str] | None = None
    frames: list[int] | None = None
    fingerprint: str | None = None
    if corpus is not None:
        ids, frames, fingerprint = _corpus(corpus, split)
    rep = verify_store(
        store,
        corpus_ids=ids,
        corpus_frames=frames,
        corpus_fingerprint=fingerprint,
        labels=LabelSet.read(labels) if labels is not None else None,
        frame_tolerance=frame_tolerance,
    )
    for warning in rep.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    for unchecked in rep.unchecked:
        err_console.print(f"not checked: {unchecked}", highlight=False, soft_wrap=True)
    for error in rep.errors:
        err_console.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
    if rep.more_errors:
        err_console.print(f"[red]... and {rep.more_errors} more errors[/]")
    summary = (
        f"{rep.parts} parts, {rep.utterances:,} utterances, {rep.frames:,} frames, "
        f"{rep.arrays} arrays checked"
    )
    if rep.ok:
        console.print(f"[green]OK[/] {store}: {summary}", highlight=False, soft_wrap=True)
        return
    n = len(rep.errors) + rep.more_errors
    console.print(
        f"[red]FAILED[/] {store}: {n} error(s); {summary}", highlight=False, soft_wrap=True
    )
    raise typer.Exit(1)


@app.command()
@report_errors
def copy(
    src: StoreArg,
    dst: Annotated[str, typer.Argument(help="Destination path or fsspec URL.")],
    chunk_rows: Annotated[
        int | None, typer.Option(help="Re-chunk to this many rows per chunk.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing destination.")] = False,
) -> None:
    """Copy a store's committed parts (checked against their checksums), then seal it."""
    from kdpipe.store.transfer import copy_store

    check_number(chunk_rows, "--chunk-rows", low=1)
    rep = copy_store(src, dst, chunk_rows=chunk_rows, overwrite=overwrite)
    console.print(
        f"copied {rep.parts_copied} parts ({rep.utterances:,} utterances, {rep.frames:,} "
        f"frames), {rep.parts_skipped} already there: {dst}",
        highlight=False,
        soft_wrap=True,
    )


@app.command()
@report_errors
def diff(
    a: StoreArg,
    b: StoreArg,
    max_frames: Annotated[int | None, typer.Option(help="Stop after this many frames.")] = None,
) -> None:
    """Agreement of two stores' teachers: top-1 agreement and mean KL on shared utterances."""
    from rich.table import Table

    from kdpipe.store.diff import diff_stores

    check_number(max_frames, "--max-frames", low=1)
    rep = diff_stores(a, b, max_frames=max_frames)
    console.print(
        f"shared utterances {rep.shared:,}; only in A {rep.only_a:,}; only in B "
        f"{rep.only_b:,}; frame-count mismatches {len(rep.frame_mismatches):,}",
        highlight=False,
        soft_wrap=True,
    )
    table = Table("level", "rows", "top-1 agreement", "mean KL(A||B)", "mean KL(B||A)")
    for level, agreement in rep.levels.items():
        table.add_row(
            level,
            f"{agreement.rows:,}",
            _number(agreement.top1_agreement),
            _number(agreement.mean_kl_ab),
            _number(agreement.mean_kl_ba),
        )
    console.print(table)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


@app.command()
@report_errors
def seal(store: StoreArg) -> None:
    """Record the committed parts in a manifest (needed to serve a store over HTTP)."""
    from kdpipe.store.parts import seal as seal_store

    n = seal_store(store)
    console.print(f"sealed {store}: {n} committed parts", highlight=False, soft_wrap=True)


@app.command()
@report_errors
def export(
    store: StoreArg,
    to: Annotated[str, typer.Option(help="Format: kaldi, lhotse or npy.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (empty or missing).")],
    dense: Annotated[
        bool, typer.Option(help="Dense (T, C) probabilities instead of the kept entries.")
    ] = False,
    renormalize: Annotated[
        bool, typer.Option(help="Rescale the kept entries of each row to sum 1.")
    ] = False,
    spread_tail: Annotated[
        bool, typer.Option(help="With --dense: spread the dropped mass over the other classes.")
    ] = False,
    level: Annotated[
        str | None, typer.Option(help="frame or utt (default: frame where the store has it).")
    ] = None,
    cuts: Annotated[
        Path | None, typer.Option(help="lhotse: attach the targets to these cuts (by id).")
    ] = None,
    corpus: Annotated[
        str | None, typer.Option(help="lhotse: take cut durations from this feature store.")
    ] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a previous export in --out.")] = False,
) -> None:
    """Write a store's targets as Kaldi posteriors/matrices, a lhotse CutSet or NumPy files."""
    from kdpipe.store.interop.export import export_store

    durations = None
    if corpus is not None:
        from kdpipe.corpus.featstore import FeatureStore

        features = FeatureStore.open(corpus)
        durations = dict(zip(features.ids, features.durations.tolist(), strict=True))
    rep = export_store(
        store,
        to,
        out,
        dense=dense,
        renormalize=renormalize,
        spread_tail=spread_tail,
        level=level,
        cuts=cuts,
        durations=durations,
        overwrite=overwrite,
    )
    console.print(
        f"exported {rep.utterances:,} utterances ({rep.frames:,} {rep.level} rows, {rep.form}) "
        f"as {rep.to} to {rep.out}: {rep.files} files, {rep.bytes:,} bytes, {rep.seconds:.1f} s",
        highlight=False,
        soft_wrap=True,
    )


app.command("import")(import_)  # `import` is a Python keyword: the function is import_
