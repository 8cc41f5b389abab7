"""``kdpipe teach``: run a teacher (or an ensemble) over a corpus once, into a target store."""

from __future__ import annotations

import json
from dataclasses import replace
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
from kdpipe.errors import ConfigError
from kdpipe.textfile import read_text


def teach(
    model: Annotated[
        Path,
        typer.Option(
            help="An ensemble.yaml (docs/ensemble-yaml.md), or one model: a checkpoint "
            "directory, an .onnx file, a Hugging Face model directory."
        ),
    ],
    corpus: Annotated[str, typer.Option(help="Feature store made by `kdpipe corpus prepare`.")],
    out: Annotated[str, typer.Option(help="Target store to write (local path or s3://...).")],
    split: Annotated[
        str | None,
        typer.Option(help="Split to label (a subset such as train[:10%] too); `all`: everything."),
    ] = "train",
    ids: Annotated[
        Path | None, typer.Option(help="File of utterance ids (one per line) instead of a split.")
    ] = None,
    topk: TopK = None,
    threshold: Threshold = None,
    mass: Mass = None,
    sample: Sample = None,
    full: Full = False,
    values: Annotated[
        str | None, typer.Option(help="Value encoding for one model: uint8 or float16.")
    ] = None,
    shard: Annotated[
        str | None, typer.Option(help="Label shard i/N of the batches (e.g. 0/4).")
    ] = None,
    batch_frames: Annotated[int, typer.Option(help="Padded input frames per batch.")] = 20000,
    part_frames: Annotated[
        int | None, typer.Option(help="Frames per committed store part (default 1M).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    precision: Annotated[
        str | None,
        typer.Option(
            help="Members' forward: fp32 (exact) or bf16 (autocast: a GPU's tensor cores); "
            "recorded in the store. Default: the ensemble.yaml's, else fp32."
        ),
    ] = None,
    threads: Annotated[
        int,
        typer.Option(
            help="Torch intra-op threads (0: torch's default, one per core); 1 on a machine "
            "other jobs share: spinning threads there cost far more than they give."
        ),
    ] = 0,
    overwrite: Annotated[
        bool, typer.Option(help="Replace a store made with other settings.")
    ] = False,
    trust_custom_code: Annotated[
        bool,
        typer.Option(
            help="Allow members that run code they came with: module and torchscript members, "
            "checkpoints of package.module:Class models."
        ),
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON line.")
    ] = False,
) -> None:
    """Run the teacher(s) once and store the essence of their posteriors.

    Resumable (run the same command again after a crash), shardable (`--shard i/N`, or
    `torchrun --nproc-per-node N -m kdpipe teach ...`), exact (see `kdpipe store verify`).
    """
    from kdpipe.essence import Rule
    from kdpipe.teach import load_ensemble, rule_from_flags, single_teacher
    from kdpipe.teach.run import teach as run_teach

    check_number(batch_frames, "--batch-frames", low=1)
    check_number(threads, "--threads", low=0)
    check_number(part_frames, "--part-frames", low=1)
    rule = rule_from_flags(topk, threshold, mass, sample, full)
    if model.is_dir() or model.suffix == ".onnx":
        settings = {} if values is None else {"values": values}
        ens = single_teacher(model, rule or Rule(), **settings)
    elif model.suffix in (".yaml", ".yml") or model.is_file():
        if rule is not None or values is not None:
            raise ConfigError(f"{model}: the selection rule and values come from the file")
        ens = load_ensemble(model)
    else:
        raise ConfigError(f"--model {model}: no such checkpoint directory or ensemble.yaml")
    if precision is not None:
        ens = replace(ens, precision=precision)  # validated on construction
    id_list = None
    if ids is not None:
        text = read_text(ids, ConfigError, "--ids file")  # a BOM is not part of the first id
        id_list = [line.strip() for line in text.splitlines() if line.strip()]
        split = None
    summary = run_teach(
        ens,
        corpus,
        out,
        split=None if split == "all" else split,
        ids=id_list,
        shard=shard,
        overwrite=overwrite,
        batch_frames=batch_frames,
        part_frames=part_frames,
        device=device,
        progress=progress,
        trust_custom_code=trust_custom_code,
        threads=threads,
    )
    done = summary.to_dict()
    if json_:
        typer.echo(json.dumps(done))
        return
    acc = "n/a" if done["accuracy"] is None else f"{done['accuracy']:.4f}"
    console.print(
        f"[bold]teach[/] shard {done['shard']}: {written(done)}; {done['frames']:,} frames, "
        f"{done['bytes_per_frame']:.1f} bytes/frame, {done['seconds']:.1f} s "
        f"({done['frames_per_second']:,.0f} frames/s), mean entropy "
        f"{done['mean_entropy']:.3f} nats, "
        f"mean tail mass {done['mean_tail_mass']:.4f}, teacher accuracy {acc} -> {out}",
        highlight=False,
        soft_wrap=True,
    )


teach = report_errors(teach)
