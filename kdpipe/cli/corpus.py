"""``kdpipe corpus``: synthesize, prepare (features) and summarise corpora."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from kdpipe.cli._common import console, err_console, report_errors

if TYPE_CHECKING:
    from kdpipe.corpus.synth import SynthSummary

app = typer.Typer(help="Build, read and prepare corpora.", no_args_is_help=True)

# --- synth (kdpipe.corpus.synth) -------------------------------------------------------

synth_app = typer.Typer(
    help="Synthesize a corpus offline with eSpeak NG (deterministic from --seed).",
    no_args_is_help=True,
)
app.add_typer(synth_app, name="synth")

SynthOut = Annotated[
    Path,
    typer.Argument(help="Output folder (must be empty unless --overwrite).", show_default=False),
]
SynthSize = Annotated[str, typer.Option("--size", help="small, medium (~5x) or large (~20x).")]
SynthUtts = Annotated[
    int | None, typer.Option("--num-utts", help="Utterances (default: from --size).")
]
SynthVoices = Annotated[
    int | None, typer.Option("--num-voices", help="Speakers (default: from --size).")
]
SynthSeed = Annotated[int, typer.Option("--seed", help="Same seed and size: same files.")]
SynthJobs = Annotated[
    int | None, typer.Option("--jobs", "-j", help="Worker processes (default: CPUs).")
]
SynthOverwrite = Annotated[
    bool, typer.Option("--overwrite", help="Replace an earlier synth output in OUT.")
]


def _print_synth(summary: SynthSummary) -> None:
    console.print(summary.table())
    console.print(summary.line(), highlight=False, soft_wrap=True)
    for reason, n in summary.dropped.items():
        err_console.print(f"[yellow]dropped {n}:[/] {reason}", highlight=False, soft_wrap=True)


@synth_app.command("keywords")
@report_errors
def synth_keywords_cmd(
    out: SynthOut,
    size: SynthSize = "small",
    num_utts: SynthUtts = None,
    num_voices: SynthVoices = None,
    seed: SynthSeed = 0,
    jobs: SynthJobs = None,
    overwrite: SynthOverwrite = False,
    words: Annotated[
        str | None, typer.Option("--words", help="Comma-separated keywords (default: 35).")
    ] = None,
) -> None:
    """A Speech-Commands-like keyword set: 1 s clips, many voices, noise, split by speaker."""
    from kdpipe.corpus.synth import KeywordSynthConfig, synth_keywords

    chosen = tuple(w.strip() for w in words.split(",") if w.strip()) if words else None
    cfg = KeywordSynthConfig.for_size(
        size, seed=seed, num_utts=num_utts, num_voices=num_voices, words=chosen
    )
    _print_synth(synth_keywords(out, cfg, jobs=jobs, overwrite=overwrite))


@synth_app.command("phones")
@report_errors
def synth_phones_cmd(
    out: SynthOut,
    size: SynthSize = "small",
    num_utts: SynthUtts = None,
    num_voices: SynthVoices = None,
    seed: SynthSeed = 0,
    jobs: SynthJobs = None,
    overwrite: SynthOverwrite = False,
    units: Annotated[
        str, typer.Option("--units", help="phones, states (3 per phone) or cd (tied triphones).")
    ] = "phones",
    num_states: Annotated[
        int, typer.Option("--num-states", help="cd: target number of tied states.")
    ] = 2000,
    text: Annotated[
        Path | None, typer.Option("--text", help="Sentences, one per line (default: random).")
    ] = None,
) -> None:
    """Sentences with frame-level labels from eSpeak's phoneme events, as Kaldi data dirs."""
    from kdpipe.corpus.synth import PhoneSynthConfig, synth_phones

    cfg = PhoneSynthConfig.for_size(
        size,
        seed=seed,
        num_utts=num_utts,
        num_voices=num_voices,
        units=units,
        num_states=num_states,
        text_file=str(text) if text else None,
    )
    _print_synth(synth_phones(out, cfg, jobs=jobs, overwrite=overwrite))


# --- prepare / info (kdpipe.corpus.prepare, kdpipe.corpus.featstore) ------------------


@app.command("prepare")
@report_errors
def prepare(
    src: Annotated[
        Path,
        typer.Argument(
            help="Corpus: a Speech Commands folder, Kaldi data dir(s) or an .h5 feature archive.",
            show_default=False,
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Feature store to create (path or URL).")],
    format: Annotated[
        str | None,
        typer.Option("--format", help="speech_commands, kaldi or hdf5 (default: detected)."),
    ] = None,
    num_mel_bins: Annotated[int, typer.Option("--num-mel-bins", help="Mel bins F.")] = 40,
    cmvn: Annotated[
        str, typer.Option("--cmvn", help="utterance, global or none (applied when read).")
    ] = "utterance",
    jobs: Annotated[
        int | None,
        typer.Option("--jobs", "-j", help="Worker processes (default: by corpus size, <= 8)."),
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Skip and report bad utterances instead of failing.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing store at --out.")
    ] = False,
    split: Annotated[
        str, typer.Option("--split", help="Split name for a single Kaldi data dir.")
    ] = "train",
) -> None:
    """Compute log-mel filterbanks of a corpus once into a feature store."""
    from kdpipe.corpus.features import FbankConfig
    from kdpipe.corpus.prepare import prepare_corpus

    cfg = FbankConfig.from_dict({"num_mel_bins": num_mel_bins, "cmvn": cmvn})
    summary = prepare_corpus(
        src, out, format, cfg, jobs=jobs, skip_bad=skip_bad, overwrite=overwrite, split=split
    )
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    console.print(
        f"wrote [bold]{summary.location}[/]: {summary.num_utterances} utterances ({splits}), "
        f"{summary.num_frames} frames, {summary.hours * 60:.1f} min of audio, task {summary.task}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"{summary.seconds:.1f} s with {summary.jobs} job(s), "
        f"{summary.utterances_per_second:.0f} utterances/s; fingerprint {summary.fingerprint}",
        highlight=False,
        soft_wrap=True,
    )
    if summary.skipped:
        err_console.print(f"[yellow]skipped {len(summary.skipped)} bad utterance(s):[/]")
        for _, reason in summary.skipped[:5]:
            err_console.print(f"  {reason}", markup=False, highlight=False, soft_wrap=True)
        if len(summary.skipped) > 5:
            err_console.print(f"  ... and {len(summary.skipped) - 5} more (store attr 'skipped')")


@app.command("info")
@report_errors
def info(
    store: Annotated[str, typer.Argument(help="Feature store path or URL.", show_default=False)],
) -> None:
    """Summarise a feature store: splits, speakers, frames, hours, labels, features."""
    from rich.table import Table

    from kdpipe.corpus.featstore import FeatureStore

    features = FeatureStore.open(store)
    rows = features.split_summary()
    table = Table(title=f"{features.location} ({features.task} task)", title_justify="left")
    for col in ("split", "utterances", "frames", "speakers", "hours"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, row in rows.items():
        table.add_row(
            name,
            str(row["utterances"]),
            str(row["frames"]),
            str(row["speakers"]),
            f"{row['hours']:.3f}",
        )
    total_h = sum(row["hours"] for row in rows.values())
    table.add_row(
        "all",
        str(len(features)),
        str(int(features.num_frames.sum())),
        str(len(set(features.speakers))),
        f"{total_h:.3f}",
        style="bold",
    )
    console.print(table)
    shown = ", ".join(features.labels.names[:12]) + (", ..." if len(features.labels) > 12 else "")
    console.print(f"labels: {len(features.labels)} ({shown})", highlight=False, soft_wrap=True)
    settings = ", ".join(f"{k}={v}" for k, v in features.config.to_dict().items())
    console.print(f"features: {settings}", highlight=False, soft_wrap=True)
    console.print(
        f"fingerprint: {features.fingerprint}; source: {features.attrs.get('source')} "
        f"({features.attrs.get('source_format')}); skipped: {len(features.skipped)}",
        highlight=False,
        soft_wrap=True,
    )
