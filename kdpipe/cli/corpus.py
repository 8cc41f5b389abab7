"""``kdpipe corpus``: synthesize, prepare (features) and summarise corpora."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
SynthRealism = Annotated[
    bool,
    typer.Option(
        "--realism",
        help="Harder speech: a mix of reverberation, telephone lines, speed and tempo "
        "perturbation and microphone colouring (docs/corpora.md); the --*-prob options win.",
    ),
]


def _prob(flag: str, what: str) -> Any:
    """A channel probability's option (``--reverb-prob``, ...)."""
    return typer.Option(flag, help=f"Share of utterances {what} (default 0; --realism: a mix).")


SynthReverb = Annotated[float | None, _prob("--reverb-prob", "in a reverberant room")]
SynthTelephone = Annotated[
    float | None, _prob("--telephone-prob", "over a telephone line (300-3400 Hz, codec)")
]
SynthSpeed = Annotated[float | None, _prob("--speed-prob", "speed-perturbed (0.9-1.1)")]
SynthTempo = Annotated[float | None, _prob("--tempo-prob", "tempo-perturbed, pitch kept")]
SynthMic = Annotated[float | None, _prob("--mic-prob", "through a coloured microphone")]


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
    realism: SynthRealism = False,
    reverb_prob: SynthReverb = None,
    telephone_prob: SynthTelephone = None,
    speed_prob: SynthSpeed = None,
    tempo_prob: SynthTempo = None,
    mic_prob: SynthMic = None,
) -> None:
    """A Speech-Commands-like keyword set: 1 s clips, many voices, noise, split by speaker."""
    from kdpipe.corpus.synth import KeywordSynthConfig, synth_keywords

    chosen = tuple(w.strip() for w in words.split(",") if w.strip()) if words else None
    cfg = KeywordSynthConfig.for_size(
        size,
        realism,
        seed=seed,
        num_utts=num_utts,
        num_voices=num_voices,
        words=chosen,
        reverb_prob=reverb_prob,
        telephone_prob=telephone_prob,
        speed_prob=speed_prob,
        tempo_prob=tempo_prob,
        mic_prob=mic_prob,
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
    labels: Annotated[
        str,
        typer.Option(
            "--labels",
            help="true: frame labels (ali.txt) from eSpeak; aligned: transcripts only, for "
            "`kdpipe corpus align`, the truth under OUT/reference. Both write lexicon.txt.",
        ),
    ] = "true",
    realism: SynthRealism = False,
    reverb_prob: SynthReverb = None,
    telephone_prob: SynthTelephone = None,
    speed_prob: SynthSpeed = None,
    tempo_prob: SynthTempo = None,
    mic_prob: SynthMic = None,
) -> None:
    """Sentences with frame-level labels from eSpeak's phoneme events, as Kaldi data dirs."""
    from kdpipe.corpus.synth import PhoneSynthConfig, synth_phones

    cfg = PhoneSynthConfig.for_size(
        size,
        realism,
        seed=seed,
        num_utts=num_utts,
        num_voices=num_voices,
        units=units,
        num_states=num_states,
        text_file=str(text) if text else None,
        labels=labels,
        reverb_prob=reverb_prob,
        telephone_prob=telephone_prob,
        speed_prob=speed_prob,
        tempo_prob=tempo_prob,
        mic_prob=mic_prob,
    )
    _print_synth(synth_phones(out, cfg, jobs=jobs, overwrite=overwrite))


# --- prepare / info (kdpipe.corpus.prepare, kdpipe.corpus.featstore) ------------------

# how prepare and info name a store's kind (its task)
_KIND_WORDS = {"frame": "frame task", "clip": "clip task", "transcribed": "transcribed corpus"}


@app.command("prepare")
@report_errors
def prepare(
    src: Annotated[
        Path,
        typer.Argument(
            help="Corpus: a Speech Commands folder, Kaldi data dir(s), an .h5 feature archive, "
            "or lhotse manifests (a cuts.jsonl.gz, or a folder of them per split).",
            show_default=False,
        ),
    ],
    out: Annotated[str, typer.Option("--out", "-o", help="Feature store to create (path or URL).")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", help="speech_commands, kaldi, hdf5 or lhotse (default: detected)."
        ),
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
        str,
        typer.Option("--split", help="Split name for a single Kaldi data dir or lhotse manifest."),
    ] = "train",
    feature_source: Annotated[
        str,
        typer.Option(
            "--feature-source",
            help="audio (fbank from the audio), stored (Kaldi feats.scp, lhotse-stored "
            "features, taken as they are) or auto: Kaldi audio where there is a wav.scp, "
            "lhotse stored where every cut has features.",
        ),
    ] = "auto",
    norm_vars: Annotated[
        bool,
        typer.Option(
            "--norm-vars", help="Kaldi cmvn.scp: normalise variances too (apply-cmvn --norm-vars)."
        ),
    ] = False,
) -> None:
    """Compute log-mel filterbanks of a corpus once into a feature store (or take the
    features a Kaldi or lhotse corpus brings)."""
    from kdpipe.corpus.features import FbankConfig
    from kdpipe.corpus.prepare import prepare_corpus

    cfg = FbankConfig.from_dict({"num_mel_bins": num_mel_bins, "cmvn": cmvn})
    summary = prepare_corpus(
        src,
        out,
        format,
        cfg,
        jobs=jobs,
        skip_bad=skip_bad,
        overwrite=overwrite,
        split=split,
        feature_source=feature_source,
        norm_vars=norm_vars,
    )
    splits = ", ".join(f"{name} {count}" for name, count in summary.splits.items())
    console.print(
        f"wrote [bold]{summary.location}[/]: {summary.num_utterances} utterances ({splits}), "
        f"{summary.num_frames} frames, {summary.hours * 60:.1f} min of audio, "
        f"{_KIND_WORDS.get(summary.task, summary.task)}",
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
    """Summarise a feature store: its kind, splits, speakers, frames, hours, labels or
    transcripts, features."""
    from rich.table import Table

    from kdpipe.corpus.featstore import FeatureStore

    features = FeatureStore.open(store)
    rows = features.split_summary()
    kind = _KIND_WORDS.get(features.task, features.task)
    table = Table(title=f"{features.location} ({kind})", title_justify="left")
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
    if features.task != "transcribed":
        names = features.labels.names
        shown = ", ".join(names[:12]) + (", ..." if len(names) > 12 else "")
        console.print(f"labels: {len(names)} ({shown})", highlight=False, soft_wrap=True)
    texts = features.texts or []
    if any(texts):
        first = next(text for text in texts if text)
        console.print(
            f"transcripts: {sum(1 for text in texts if text)} of {len(features)} utterances "
            f"(first: {first[:60]!r})",
            highlight=False,
            soft_wrap=True,
        )
    settings = ", ".join(f"{k}={v}" for k, v in features.config.to_dict().items())
    if features.external is not None:
        ext = features.external
        said = ", ".join(f"{k}={v}" for k, v in ext["config"].items())
        settings = (
            f"external ({ext['kind']}: dim={ext['dim']}, {said}; fingerprint "
            f"{ext['fingerprint']}); recorded as {settings}"
        )
    console.print(f"features: {settings}", markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"fingerprint: {features.fingerprint}; source: {features.attrs.get('source')} "
        f"({features.attrs.get('source_format')}); skipped: {len(features.skipped)}",
        highlight=False,
        soft_wrap=True,
    )


@app.command("verify")
@report_errors
def verify(
    store: Annotated[str, typer.Argument(help="Feature store path or URL.", show_default=False)],
) -> None:
    """Read a whole feature store: every chunk's CRC, every array's sha256, offsets, ids and
    labels against each other, features finite; exit 1 on any problem."""
    from rich.markup import escape

    from kdpipe.corpus.featverify import verify_feature_store

    rep = verify_feature_store(store)
    for problem in rep.problems[:50]:  # (a problem may quote [shapes]: escaped)
        err_console.print(f"[red]error:[/] {escape(problem)}", highlight=False, soft_wrap=True)
    if len(rep.problems) > 50:
        err_console.print(f"[red]... and {len(rep.problems) - 50} more problems[/]")
    summary = (
        f"{rep.utterances:,} utterances, {rep.frames:,} frames, {rep.arrays} arrays, "
        f"{rep.chunks} chunks read"
    )
    if not rep.checksums and rep.utterances:
        err_console.print(
            "[yellow]warning:[/] this store records no checksums (written before kdpipe "
            "checked feature stores): damaged chunks could not be detected unless they failed "
            "to decode; prepare it again to get them",
            highlight=False,
            soft_wrap=True,
        )
    if rep.ok:
        checked = "CRCs and sha256 checked" if rep.checksums else "no checksums to check"
        console.print(
            f"[green]OK[/] {store}: {summary}; {checked}", highlight=False, soft_wrap=True
        )
        return
    console.print(
        f"[red]FAILED[/] {store}: {len(rep.problems)} problem(s); {summary}",
        highlight=False,
        soft_wrap=True,
    )
    raise typer.Exit(1)


# --- align (kdpipe.align) --------------------------------------------------------------


@app.command("align")
@report_errors
def align(
    src: Annotated[
        Path,
        typer.Argument(
            help="A transcribed corpus (e.g. a Kaldi dir with wav.scp, text, utt2spk); with "
            "--model, a data dir an earlier align wrote.",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The aligned data dir to write.")],
    lexicon: Annotated[
        Path | None,
        typer.Option(help="Pronunciations: Kaldi lexicon.txt / lexiconp.txt or CMUdict."),
    ] = None,
    g2p: Annotated[
        str | None,
        typer.Option(help="eSpeak NG voice (e.g. en-us) for words the lexicon lacks."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Alignment settings YAML (keys: docs/align.md).")
    ] = None,
    num_leaves: Annotated[
        int | None, typer.Option(help="Tied triphone states (default 2000; 0: monophones).")
    ] = None,
    jobs: Annotated[int, typer.Option("--jobs", "-j", help="Worker processes (Kaldi's nj).")] = 1,
    model: Annotated[
        Path | None,
        typer.Option(help="Realign SRC with this kdpipe frame model (needs --corpus)."),
    ] = None,
    corpus: Annotated[
        Path | None, typer.Option(help="With --model: the feature store prepared from SRC.")
    ] = None,
    skip_bad: Annotated[
        bool, typer.Option(help="Leave out utterances that cannot be aligned (reported).")
    ] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an earlier output in --out.")] = False,
    split: Annotated[str, typer.Option(help="The split of a single data dir.")] = "train",
    trust_custom_code: Annotated[
        bool, typer.Option(help="Allow a --model whose architecture is user code.")
    ] = False,
) -> None:
    """Frame labels for a transcribed corpus: Kaldi GMM-HMM training (monophones, a tree
    of tied triphone states, triphones) and forced alignment (docs/align.md)."""
    from kdpipe.errors import ConfigError
    from kdpipe.schema import load_yaml

    def log(line: str) -> None:
        err_console.print(line, highlight=False, soft_wrap=True)

    if model is not None:
        from kdpipe.align.realign import realign_data

        if corpus is None:
            raise ConfigError("--model needs --corpus: the feature store prepared from SRC")
        summary = realign_data(
            src, corpus, model, out, skip_bad=skip_bad, trust_custom_code=trust_custom_code, log=log
        )
    else:
        from kdpipe.align.align_config import AlignConfig
        from kdpipe.align.data_dir import align_data

        settings = dict(load_yaml(config) or {}) if config is not None else {}
        if num_leaves is not None:
            settings["num_leaves"] = num_leaves
        summary = align_data(
            src,
            out,
            config=AlignConfig.from_dict(settings),
            lexicon=lexicon,
            g2p=g2p,
            jobs=jobs,
            skip_bad=skip_bad,
            overwrite=overwrite,
            split=split,
            log=log,
        )
    console.print(
        f"wrote {summary.out}: {summary.aligned} utterances aligned to {summary.num_states} "
        f"tied states in {summary.seconds:.0f} s; {len(summary.skipped)} left out",
        highlight=False,
        soft_wrap=True,
    )
    for utt, reason in summary.skipped[:5]:
        err_console.print(f"[yellow]left out {utt}:[/] {reason}", highlight=False, soft_wrap=True)
    if summary.agreement:
        a = summary.agreement
        console.print(
            f"against the true phones: frame agreement {a['frame_agreement']:.3f}, "
            f"boundaries within 10 ms {a['within_10ms']:.3f}, within 20 ms {a['within_20ms']:.3f}",
            highlight=False,
        )
