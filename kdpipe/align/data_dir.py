"""``align_data``: a transcribed corpus in, a frame-labelled Kaldi data dir out.

``kdpipe corpus align SRC --out DIR`` reads ``SRC`` with kdpipe's readers (any corpus whose
utterances have audio and a transcript), builds the lexicon its transcripts need
(``corpus.lexicon.lexicon_for``: a lexicon file, eSpeak G2P for the rest), trains and aligns
(``aligner.align_corpus``) and writes ``DIR`` so that ``kdpipe corpus prepare DIR`` reads it
as a frame-labelled corpus:

    DIR/labels.txt                 tied-state names in pdf order (the label set of ali.txt)
    DIR/phones.txt                 the phone set (silence first)
    DIR/{split}/wav.scp, segments, text, utt2spk, spk2utt
    DIR/{split}/ali.txt            utt-id state state ...   (one tied state per frame)
    DIR/{split}/phone_ali.txt      utt-id phone phone ...   (the phones of the same frames)
    DIR/align/final.safetensors    the final GMM-HMM (kdpipe.hmm.model, never pickled)
    DIR/align/tree                 the tree as a Kaldi binary file (Kaldi's tools read it)
    DIR/align/lexicon.txt          the lexicon used, G2P pronunciations included
    DIR/align/report.json          what made it and how it went (see ``report_dict``)

A tied state is named ``<phone>_<pdf class>_<k>``: the k-th leaf of the tree under that
phone's HMM state (``<phone>_<pdf class>`` for monophones). Utterances that no beam could
align are left out of ``DIR`` with ``skip_bad`` (and listed in the report), else an
``AlignmentError`` names the first. Where ``SRC/reference/`` holds the true phones (a
corpus made by ``synth phones --labels aligned``), the report also gives the agreement with
them (``truth``).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe import __version__, outputs
from kdpipe.align.align_config import AlignConfig
from kdpipe.align.aligner import AlignResult, align_corpus, pdf_alignments, phone_alignments
from kdpipe.align.truth import read_reference
from kdpipe.corpus.lexicon import Lexicon, LexiconReport, lexicon_for, read_lexicon, write_lexicon
from kdpipe.corpus.manifest import Corpus, Utterance
from kdpipe.corpus.readers import read_corpus
from kdpipe.errors import AlignmentError, CorpusError
from kdpipe.hmm.event_map import kaldi_binary
from kdpipe.hmm.model import GmmHmm

KALDI_BINARY = b"\x00B"  # the header of a Kaldi binary file


@dataclass(frozen=True)
class AlignSummary:
    """What ``align_data`` wrote."""

    out: str
    aligned: int
    skipped: list[tuple[str, str]]
    num_states: int
    seconds: float
    agreement: dict[str, float] | None
    lexicon: LexiconReport


def align_data(
    src: str | Path,
    out: str | Path,
    *,
    config: AlignConfig = AlignConfig(),  # noqa: B008 (frozen)
    lexicon: str | Path | None = None,
    g2p: str | None = None,
    jobs: int = 1,
    skip_bad: bool = False,
    overwrite: bool = False,
    reference: Mapping[str, np.ndarray] | None = None,
    split: str = "train",
    log: Callable[[str], None] = lambda line: None,
) -> AlignSummary:
    """Align the transcribed corpus at ``src`` into the data dir ``out`` (module docstring)."""
    started = time.perf_counter()
    out = Path(out)
    outputs.refuse_inputs(out, (src, lexicon), "aligned data dir", CorpusError)  # never deleted
    if out.exists() and any(out.iterdir()) and not (out / "align" / ".work").is_dir():
        if not overwrite:
            raise CorpusError(f"{out} exists and is not an interrupted align: use --overwrite")
        if not (out / "align" / "report.json").is_file():
            raise CorpusError(
                f"{out} holds no finished align (no align/report.json): --overwrite replaces "
                "only an align's output; remove it yourself or choose another folder"
            )
        shutil.rmtree(out)
    corpus = read_corpus(src, split=split, skip_bad=skip_bad)
    texts = {u.id: u.text for u in corpus.utterances if u.text is not None}
    missing = [u.id for u in corpus.utterances if u.text is None]
    if missing:
        raise CorpusError(
            f"{src}: utterance {missing[0]} has no transcript (text); "
            f"{len(missing)} utterances lack one"
        )
    given = read_lexicon(lexicon) if lexicon is not None else None
    lex, lex_report, left_out = lexicon_for(texts, given, g2p, skip_bad=skip_bad)
    skipped = list(corpus.skipped) + list(left_out)
    dropped = {u for u, _ in left_out}
    utts = [u for u in corpus.utterances if u.id not in dropped]
    words = {u.id: texts[u.id].split() for u in utts}
    log(f"lexicon: {lex_report.summary()}")
    if reference is None:
        reference = read_reference(src)  # the truth of a synthetic corpus, where there is one
    result = align_corpus(
        utts,
        words,
        lex,
        config,
        out / "align" / ".work",
        jobs=jobs,
        reference=reference,
        skip_bad=skip_bad,
        log=log,
    )
    if result.failed and not skip_bad:
        utt, reason = result.failed[0]
        raise AlignmentError(
            f"utterance {utt}: {reason} ({len(result.failed)} utterances failed to align; "
            "the models are kept: rerun with --skip-bad to leave them out)"
        )
    skipped += result.failed
    aligned = [u for u in utts if u.id in result.alignments]
    names = state_names(result.model, lex)
    _write(out, corpus, aligned, result, lex, names)
    report = _report(
        src, corpus, config, result, lex, lex_report, skipped, time.perf_counter() - started
    )
    (out / "align" / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return AlignSummary(
        str(out),
        len(aligned),
        skipped,
        len(names),
        time.perf_counter() - started,
        result.final_agreement,
        lex_report,
    )


def state_names(model: GmmHmm, lexicon: Lexicon) -> list[str]:
    """The name of every pdf (tied state), in pdf-id order: ``<phone>_<class>[_<k>]``."""
    phones = ["<eps>", lexicon.silence, *lexicon.nonsilence_phones]  # by HMM phone id
    classes = model.topology_object().get_phone_to_num_pdf_classes()
    info = model.tree.get_pdf_info(phones=list(model.tm.phones), num_pdf_classes=list(classes))
    roots = [min(pairs) for pairs in info]  # per pdf: its (phone id, pdf class)
    leaves: dict[tuple[int, int], int] = {}
    for root in roots:
        leaves[root] = leaves.get(root, 0) + 1
    seen: dict[tuple[int, int], int] = {}
    names = []
    for phone, pdf_class in roots:
        k = seen.get((phone, pdf_class), 0)
        seen[(phone, pdf_class)] = k + 1
        base = f"{phones[phone]}_{pdf_class}"
        names.append(base if leaves[(phone, pdf_class)] == 1 else f"{base}_{k}")
    return names


def state_phone(name: str) -> str:
    """The phone of a tied-state name ``<phone>_<pdf class>[_<k>]`` (``state_names``); a
    name of another form (a phone itself) is returned as it is."""
    match = _STATE_NAME.fullmatch(name)
    return match.group(1) if match else name


_STATE_NAME = re.compile(r"(.+?)_\d+(?:_\d+)?")


def _write(
    out: Path,
    corpus: Corpus,
    utts: list[Utterance],
    result: AlignResult,
    lexicon: Lexicon,
    names: list[str],
) -> None:
    (out / "align").mkdir(parents=True, exist_ok=True)
    (out / "labels.txt").write_text("".join(f"{n}\n" for n in names))
    (out / "phones.txt").write_text("".join(f"{p}\n" for p in lexicon.phones))
    pdfs = pdf_alignments(result.model, result.alignments)
    phones = phone_alignments(result.model, result.lang, result.alignments)
    by_split: dict[str, list[Utterance]] = {}
    for utt in utts:
        by_split.setdefault(utt.split, []).append(utt)
    for split, members in by_split.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        members = sorted(members, key=lambda u: u.id)
        segmented = any(u.start > 0 or u.end is not None for u in members)
        recordings: dict[str, str] = {}
        lines: dict[str, list[str]] = {
            k: [] for k in ("segments", "text", "utt2spk", "ali", "phone_ali")
        }
        for utt in members:
            assert utt.audio is not None and utt.text is not None
            rec = f"rec-{len(recordings)}" if segmented else utt.id
            if segmented:
                rec = next((r for r, a in recordings.items() if a == utt.audio), rec)
                end = -1 if utt.end is None else utt.end
                lines["segments"].append(f"{utt.id} {rec} {utt.start:.3f} {end:.3f}")
            recordings[rec] = str(Path(utt.audio).resolve())
            lines["text"].append(f"{utt.id} {utt.text}")
            lines["utt2spk"].append(f"{utt.id} {utt.speaker}")
            lines["ali"].append(f"{utt.id} " + " ".join(names[p] for p in pdfs[utt.id]))
            lines["phone_ali"].append(f"{utt.id} " + " ".join(phones[utt.id]))
        _table(folder / "wav.scp", [f"{r} {a}" for r, a in recordings.items()])
        if segmented:
            _table(folder / "segments", lines["segments"])
        for name in ("text", "utt2spk"):
            _table(folder / name, lines[name])
        _table(folder / "ali.txt", lines["ali"])
        _table(folder / "phone_ali.txt", lines["phone_ali"])
        speakers: dict[str, list[str]] = {}
        for utt in members:
            speakers.setdefault(utt.speaker, []).append(utt.id)
        _table(folder / "spk2utt", [f"{s} {' '.join(us)}" for s, us in sorted(speakers.items())])
    result.model.save(out / "align" / "final.safetensors")
    (out / "align" / "tree").write_bytes(KALDI_BINARY + kaldi_binary(result.model.tree))
    write_lexicon(lexicon, out / "align" / "lexicon.txt")


def _table(path: Path, lines: list[str]) -> None:
    path.write_text("".join(f"{line}\n" for line in lines))


def _report(
    src: str | Path,
    corpus: Corpus,
    config: AlignConfig,
    result: AlignResult,
    lexicon: Lexicon,
    lexicon_report: LexiconReport,
    skipped: list[tuple[str, str]],
    seconds: float,
) -> dict[str, Any]:
    return {
        "made_by": f"kdpipe {__version__} corpus align",
        "source": str(src),
        "source_format": corpus.format,
        "config": config.to_dict(),
        "config_fingerprint": config.fingerprint,
        "lexicon_fingerprint": lexicon.fingerprint,
        "lexicon": lexicon_report.to_dict(),
        "aligned": len(result.alignments),
        "skipped": [{"utterance": u, "reason": r} for u, r in skipped],
        "model": result.model.info(),
        "passes": [vars(p) for p in result.passes],
        "agreement": result.final_agreement,
        "seconds": round(seconds, 1),
    }
