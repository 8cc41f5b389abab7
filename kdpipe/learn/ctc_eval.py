"""Score a CTC checkpoint: its test transcripts decoded (greedy or prefix beam search,
optionally with a token bigram of the train transcripts) and the error rates counted by
kaldialign: tokens (PER for phone units, CER for characters), and words where the units
spell them (chars, bpe).

``evaluate_checkpoint`` (``kdpipe eval``) hands a checkpoint whose card says ``ctc`` here.
Legend: N utterances, T'_i output frames, C classes (blank included).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.units import TokenUnits
from kdpipe.decode.ctc import CtcDecodeOptions, TokenBigram, decode_ctc, write_hypotheses
from kdpipe.errors import ConfigError, FingerprintMismatch, LabelSetError, ModelError
from kdpipe.learn.ctc import score_ctc, token_split
from kdpipe.learn.evaluate import EvalReport, evaluate_checkpoint
from kdpipe.learn.token_data import UNITS_DIR
from kdpipe.metrics import ErrorCounts, total_errors
from kdpipe.models import load_checkpoint, pick_device, read_card

# the token error rate's name in reports and recipe tables, by unit kind
TOKEN_RATE = {"phones": "decoded_per", "chars": "decoded_cer", "bpe": "decoded_ter"}


@dataclass
class CtcEvalReport:
    """Scores of a CTC checkpoint on one split."""

    model: str
    corpus: str
    split: str
    units: str  # the units spec (phones, chars, bpe:N)
    utterances: int
    ctc_loss: float  # per output frame
    accuracy: float  # 1 - TER of greedy decoding (what early stopping maximised)
    options: CtcDecodeOptions
    tokens: ErrorCounts  # of the decoding ``options`` asks for
    words: ErrorCounts | None = None  # chars and bpe: the words the tokens spell
    hypotheses: dict[str, list[str]] = field(default_factory=dict)  # id -> tokens
    word_hypotheses: dict[str, list[str]] = field(default_factory=dict)  # id -> words

    @property
    def level(self) -> str:
        return "frame"

    def to_dict(self) -> dict[str, Any]:
        kind = self.units.split(":")[0]
        out: dict[str, Any] = {
            "model": self.model,
            "corpus": self.corpus,
            "split": self.split,
            "level": "frame",
            "objective": "ctc",
            "units": self.units,
            "utterances": self.utterances,
            "ctc_loss": self.ctc_loss,
            "token_accuracy": self.accuracy,
            TOKEN_RATE[kind]: self.tokens.rate,
            "decode": {"tokens": self.tokens.to_dict(), **_options(self.options)},
        }
        if self.words is not None:
            out["decoded_wer"] = self.words.rate
            out["decode"]["words"] = self.words.to_dict()
        return out


def _options(opts: CtcDecodeOptions) -> dict[str, Any]:
    return {"method": opts.method, "beam": opts.beam, "lm_weight": opts.lm_weight}


def read_units(model_dir: str | Path, record: dict[str, Any]) -> TokenUnits:
    """The units saved with a CTC checkpoint, checked against its card's record."""
    units = TokenUnits.read(Path(model_dir) / UNITS_DIR)
    if units.fingerprint != record.get("units", {}).get("fingerprint"):
        raise ModelError(
            f"checkpoint {model_dir}: its {UNITS_DIR}/ are not the units its card records "
            "(replaced after training?)"
        )
    return units


def evaluate_ctc(
    model_dir: str | Path,
    corpus: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    device: str = "auto",
    trust_custom_code: bool = False,
    options: CtcDecodeOptions | None = None,
    jobs: int = 1,
) -> CtcEvalReport:
    """Decode ``split`` of ``corpus`` with CTC checkpoint ``model_dir`` and score it.

    ``options`` None: the decoding the run was trained with (``ctc.decode``, ``ctc.beam``;
    no LM). With ``lm_weight`` > 0, a token bigram of the corpus' train transcripts
    weighs in. With ``out``: ``metrics.json``, ``hyp.txt`` (tokens) and, where the units
    spell words, ``hyp_words.txt``, in Kaldi ``text`` format.
    """
    store = FeatureStore.open(corpus)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev, trust_custom_code=trust_custom_code)
    if card.ctc is None:
        raise ModelError(f"checkpoint {model_dir} is not a CTC model")
    units = read_units(model_dir, card.ctc)
    try:
        card.check_compatible(units.labels, store.feature_fingerprint, f"corpus {corpus}",
                              features=store.config, name=f"checkpoint {model_dir}")  # fmt: skip
    except (LabelSetError, FingerprintMismatch) as error:
        raise ModelError(str(error)) from None
    if options is None:
        trained = dict(card.training.get("ctc") or {})
        options = CtcDecodeOptions(method=trained.get("decode", "greedy"),
                                   beam=int(trained.get("beam", 8)))  # fmt: skip
    lm = None
    if options.lm_weight > 0:
        train = token_split(store, "train", units, card.subsampling)
        lm = TokenBigram.estimate([seq.tolist() for seq in train.tokens], len(units.labels),
                                  units.blank)  # fmt: skip
    data = token_split(store, split, units, card.subsampling)
    scores = score_ctc(model, data, device=dev, keep=True)
    if not np.isfinite(scores.loss):
        raise ModelError(f"checkpoint {model_dir}: CTC loss {scores.loss} on {corpus} {split!r}")
    if options.method == "greedy" and options.lm_weight == 0:
        hyps = scores.hyp
    else:
        hyps = decode_ctc(scores.logp, units.blank, options, lm=lm, jobs=jobs)
    refs = [seq.tolist() for seq in data.tokens]
    tokens = total_errors(refs, hyps)
    words = None
    word_hyps: dict[str, list[str]] = {}
    if units.kind != "phones":
        ref_words = [units.words(seq) or [] for seq in refs]
        hyp_words = [units.words(seq) or [] for seq in hyps]
        words = total_errors(ref_words, hyp_words)
        word_hyps = dict(zip(data.ids, hyp_words, strict=True))
    report = CtcEvalReport(
        model=str(model_dir),
        corpus=str(corpus),
        split=split,
        units=str(units.spec),
        utterances=len(data),
        ctc_loss=scores.loss,
        accuracy=scores.accuracy,
        options=options,
        tokens=tokens,
        words=words,
        hypotheses={utt: units.token_names(seq) for utt, seq in zip(data.ids, hyps, strict=True)},
        word_hypotheses=word_hyps,
    )
    if out is not None:
        write_ctc_report(report, Path(out))
    return report


def write_ctc_report(report: CtcEvalReport, out: Path) -> None:
    """``metrics.json``, ``hyp.txt`` and (words) ``hyp_words.txt`` in ``out``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a folder for the scores")
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    write_hypotheses(out / "hyp.txt", report.hypotheses)
    if report.words is not None:
        write_hypotheses(out / "hyp_words.txt", report.word_hypotheses)


def evaluate_model(
    model_dir: str | Path,
    corpus: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    *,
    ctc_options: CtcDecodeOptions | None = None,
    jobs: int = 1,
    **frame_options: Any,
) -> EvalReport | CtcEvalReport:
    """Score any checkpoint: a CTC model's through ``evaluate_ctc`` (``ctc_options``),
    any other through ``evaluate.evaluate_checkpoint`` (``frame_options``: view, decode,
    words, lexicon, lm, progress). ``device`` and ``trust_custom_code`` go to both."""
    card = read_card(model_dir)
    common = {key: frame_options.pop(key) for key in ("device", "trust_custom_code")
              if key in frame_options}  # fmt: skip
    if card.ctc is None:
        return evaluate_checkpoint(model_dir, corpus, split, out, jobs=jobs, **common,
                                   **frame_options)  # fmt: skip
    if frame_options.get("view") is not None:
        raise ConfigError("a CTC model is scored on whole utterances: drop the view")
    return evaluate_ctc(model_dir, corpus, split, out, options=ctc_options, jobs=jobs, **common)
