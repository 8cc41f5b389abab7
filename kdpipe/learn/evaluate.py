"""Run a model over labelled data: loss, accuracy and per-utterance predictions.

Legend: B batch, T' output frames, C classes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from kdpipe.batching import bucket_batches
from kdpipe.corpus.featstore import FeatureStore
from kdpipe.corpus.lexicon import lexicon_beside, read_lexicon
from kdpipe.corpus.views import ViewConfig
from kdpipe.decode.graph import DecodingGraph
from kdpipe.decode.hybrid import DecodeOptions
from kdpipe.decode.jobs import Decoder
from kdpipe.decode.scoring import (
    Decoded,
    decoded_errors,
    phone_references,
    training_graph,
    training_word_graph,
    tune_scale,
    word_references,
)
from kdpipe.decode.word_graph import alignment_model_beside
from kdpipe.errors import ConfigError, ModelError
from kdpipe.learn.data import LabelledData
from kdpipe.losses import IGNORE, align_frame_labels, hard_ce
from kdpipe.metrics import collapsed_per, confusion
from kdpipe.models import load_checkpoint, pick_device


@dataclass
class Predictions:
    """Argmax predictions and references per utterance (at the model's output rate)."""

    loss: float  # mean cross-entropy over counted frames (or clips)
    correct: int
    counted: int
    hyp: list[np.ndarray] = field(default_factory=list)  # N x (T'_i,) or N x (1,)
    ref: list[np.ndarray] = field(default_factory=list)
    logp: list[np.ndarray] = field(default_factory=list)  # N x (T'_i, C) when asked

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.counted, 1)


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    data: LabelledData,
    batch_frames: int = 40000,
    device: torch.device | str = "cpu",
    keep: bool = False,
    keep_logp: bool = False,
) -> Predictions:
    """Evaluate ``model`` on ``data`` in length order; ``keep`` stores hyp/ref sequences,
    ``keep_logp`` (frame level) also each utterance's log-posteriors (to decode them)."""
    was_training = model.training
    model.eval()
    sub = int(getattr(model, "subsampling", 1))
    total_loss, correct, counted = 0.0, 0, 0
    hyp: dict[int, np.ndarray] = {}
    ref: dict[int, np.ndarray] = {}
    logps: dict[int, np.ndarray] = {}
    for idx in bucket_batches(data.lengths, batch_frames):
        batch = data.batch(idx).to(torch.device(device))
        logits, out_lengths = model(batch.x, batch.lengths)  # (B, T', C) or (B, C)
        y = batch.y
        if data.level == "frame":
            y = align_frame_labels(y, sub, out_lengths, logits.shape[1])  # (B, T')
        loss, batch_correct, batch_counted = hard_ce(logits.float(), y)
        total_loss += float(loss) * batch_counted
        correct, counted = correct + batch_correct, counted + batch_counted
        if keep:
            pred = logits.argmax(-1).cpu().numpy()  # (B, T') or (B,)
            labels = y.cpu().numpy()
            logp = torch.log_softmax(logits.float(), -1).cpu().numpy() if keep_logp else None
            for row, utt in enumerate(batch.index):
                if data.level == "frame":
                    valid = labels[row] != IGNORE
                    hyp[int(utt)], ref[int(utt)] = pred[row][valid], labels[row][valid]
                    if logp is not None:
                        logps[int(utt)] = logp[row][valid]  # (T'_valid, C)
                else:
                    hyp[int(utt)], ref[int(utt)] = pred[row : row + 1], labels[row : row + 1]
    if was_training:
        model.train()
    out = Predictions(total_loss / max(counted, 1), correct, counted)
    if keep:
        out.hyp = [hyp[utt] for utt in range(len(data))]
        out.ref = [ref[utt] for utt in range(len(data))]
        out.logp = [logps[utt] for utt in range(len(data))] if logps else []
    return out


def _check_finite(pred: Predictions, model_dir: str | Path, corpus: str | Path, split: str) -> None:
    """A NaN or infinite loss is no score: ``ModelError`` naming the model."""
    if not math.isfinite(pred.loss):
        raise ModelError(
            f"checkpoint {model_dir}: cross-entropy {pred.loss} on {corpus} split {split!r}: "
            "the model's outputs are not finite there (NaN weights, or features out of range)"
        )


@dataclass
class EvalReport:
    """Scores of a checkpoint on one split of a feature store."""

    model: str
    corpus: str
    split: str
    level: str
    utterances: int
    cross_entropy: float
    accuracy: float  # frame accuracy (frame level) or clip accuracy (utterance level)
    collapsed_per: float | None  # frame level only: the argmax collapsed, no decoder
    labels: list[str]
    confusion: np.ndarray  # (C, C) counts[ref, hyp]
    view: dict | None = None  # ViewConfig.to_dict() of the crop scored; None: whole utterances
    decoded: Decoded | None = None  # phone-loop decoding, when asked (frame level)
    decoded_words: Decoded | None = None  # word-graph decoding, when asked and possible
    lexicon: str | None = None  # the word graph's lexicon
    predictions: dict[str, np.ndarray] = field(default_factory=dict)  # utterance -> (T',)
    # argmax label index per valid output frame (frame level; not in to_dict)

    def to_dict(self) -> dict:
        key = "frame_accuracy" if self.level == "frame" else "clip_accuracy"
        out = {
            "model": self.model,
            "corpus": self.corpus,
            "split": self.split,
            "level": self.level,
            "utterances": self.utterances,
            "cross_entropy": self.cross_entropy,
            key: self.accuracy,
        }
        if self.collapsed_per is not None:
            out["collapsed_per"] = self.collapsed_per
        if self.view is not None:
            out["view"] = self.view
        if self.decoded is not None:
            out["decoded_per"] = self.decoded.rate
            out["decode"] = self.decoded.to_dict()
        if self.decoded_words is not None:
            out["decoded_wer"] = self.decoded_words.rate
            out["decode_words"] = {**self.decoded_words.to_dict(), "lexicon": self.lexicon}
        return out


def evaluate_checkpoint(
    model_dir: str | Path,
    corpus: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    device: str = "auto",
    trust_custom_code: bool = False,
    view: ViewConfig | None = None,
    decode: DecodeOptions | None = None,
    tune_split: str = "dev",
    words: bool | None = None,
    lexicon: str | Path | None = None,
    lm: str | Path | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> EvalReport:
    """Score checkpoint ``model_dir`` on ``split`` (a name or a subset such as
    ``test[:50%]``) of feature store ``corpus``; with ``view``, on each utterance's crop
    window (``LabelledData.from_store``).

    Refuses a corpus whose label set or feature config disagrees with the checkpoint's
    card. With ``out``, writes ``metrics.json``, ``confusion.csv`` and ``confusion.png``
    (and ``hyp.txt`` / ``hyp_words.txt``, the decoded phones / words in Kaldi ``text``
    format, when decoding).

    ``decode`` (frame level): also decode every utterance through a phone loop (priors and
    phone bigram from the corpus' train split, ``kdpipe.decode``) for the decoded PER, and
    through a word graph for the WER: ``words`` None decodes words when the store has
    transcripts and a ``lexicon`` is given or lies beside the corpus it was prepared from
    (``corpus.lexicon.lexicon_beside``), True insists, False never; ``lm`` an ARPA file
    (None: a bigram of the train transcripts); the graph is Kaldi's HCLG from the
    alignment's tree where the corpus was labelled by ``kdpipe corpus align``, context-free
    otherwise (``kdpipe.decode.word_graph``). An acoustic scale of None is the best of a
    sweep on ``tune_split`` (never the scored one), per graph. ``jobs`` worker processes
    decode.
    """
    store = FeatureStore.open(corpus)
    dev = pick_device(device)
    model, card = load_checkpoint(model_dir, dev, trust_custom_code=trust_custom_code)
    level = store.level
    card.check_compatible(
        store.labels,
        store.feature_fingerprint,
        f"corpus {corpus}",
        features=store.config,
        level=level,
        name=f"checkpoint {model_dir}",
    )
    data = LabelledData.from_store(store, split, view)
    decoding = decode is not None and level == "frame"
    if decode is not None and not decoding:
        raise ConfigError("decode: a clip-level model has no phones to decode")
    if decode is not None and decode.acoustic_scale is None and tune_split == split:
        raise ConfigError(
            f"decode: the acoustic scale is tuned on {tune_split!r}, not on the scored split"
        )
    graphs: dict[str, tuple[DecodingGraph, np.ndarray]] = {}
    lexicon_path = None
    names = list(store.labels.names)
    if decoding:  # graphs before the long work: a bad lexicon or LM fails at once
        graphs["phone"] = training_graph(store)
        lexicon_path = _word_lexicon(store, words, lexicon, lm, view)
        if lexicon_path is not None:
            # the alignment's tree where the labels are its tied states, context-free else
            tree = alignment_model_beside(store.attrs.get("source", ""), names)
            graph = training_word_graph(store, read_lexicon(lexicon_path), lm, model=tree)
            graphs["word"] = (graph, graphs["phone"][1])
    pred = predict(model, data, device=dev, keep=True, keep_logp=decoding)
    _check_finite(pred, model_dir, corpus, split)
    report = EvalReport(
        model=str(model_dir),
        corpus=str(corpus),
        split=split,
        level=level,
        utterances=len(data),
        cross_entropy=pred.loss,
        accuracy=pred.accuracy,
        collapsed_per=collapsed_per(pred.ref, pred.hyp, names) if level == "frame" else None,
        labels=names,
        confusion=confusion(pred.ref, pred.hyp, len(names)),
        view=None if view is None else view.to_dict(),
        lexicon=None if lexicon_path is None else str(lexicon_path),
        predictions=dict(zip(data.ids, pred.hyp, strict=True)) if level == "frame" else {},
    )
    if decode is not None and graphs:
        tuned = None
        if decode.acoustic_scale is None:
            tune = LabelledData.from_store(store, tune_split, view)
            tuned = (tune, predict(model, tune, device=dev, keep=True, keep_logp=True))
            _check_finite(tuned[1], model_dir, corpus, tune_split)
        for unit, (graph, log_prior) in graphs.items():
            with Decoder(graph.fst, jobs, progress) as decoder:
                result = _decode(store, graph, log_prior, decode, pred, data, tuned, decoder)
            if unit == "phone":
                report.decoded = result
            else:
                report.decoded_words = result
        if tuned is not None:
            for done in (report.decoded, report.decoded_words):
                if done is not None:
                    done.tuned_on = tune_split
    if out is not None:
        write_report(report, Path(out))
    return report


def _word_lexicon(
    store: FeatureStore,
    words: bool | None,
    lexicon: str | Path | None,
    lm: str | Path | None,
    view: ViewConfig | None,
) -> Path | None:
    """The lexicon of the word graph, or None when words are not decoded."""
    if words is False:
        return None
    found = Path(lexicon) if lexicon is not None else lexicon_beside(store.attrs.get("source", ""))
    asked = words is True or lexicon is not None or lm is not None
    why = None
    if store.texts is None or not any(store.texts):
        why = f"{store.location} has no transcripts"
    elif found is None:
        why = f"no lexicon beside {store.attrs.get('source') or store.location} (give --lexicon)"
    elif view is not None:
        why = "a crop window has no words to score"
    if why is not None:
        if asked:
            raise ConfigError(f"decode: no word error rate: {why}")
        return None
    return found


def _decode(
    store: FeatureStore,
    graph: DecodingGraph,
    log_prior: np.ndarray,
    decode: DecodeOptions,
    pred: Predictions,
    data: LabelledData,
    tuned: tuple[LabelledData, Predictions] | None,
    decoder: Decoder,
) -> Decoded:
    """The decoded errors of ``pred``; the acoustic scale given, or tuned on ``tuned``."""

    def refs(part: LabelledData, predictions: Predictions) -> list[list[str]]:
        if graph.unit == "word":
            return word_references(store, part.ids)
        return phone_references(list(store.labels.names), predictions.ref)

    scale, sweep = decode.acoustic_scale, dict[str, float]()
    if scale is None:
        assert tuned is not None
        tune, tune_pred = tuned
        scale, sweep = tune_scale(graph, log_prior, tune_pred.logp, refs(tune, tune_pred),
                                  tune.ids, decode, decoder=decoder)  # fmt: skip
    result = decoded_errors(graph, log_prior, pred.logp, refs(data, pred), data.ids,
                            replace(decode, acoustic_scale=scale), decoder)  # fmt: skip
    result.sweep = sweep
    return result


def write_report(report: EvalReport, out: Path) -> None:
    """``metrics.json``, ``confusion.csv`` (rows = reference) and ``confusion.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(report.to_dict(), indent=1) + "\n")
    with open(out / "confusion.csv", "w") as table:
        table.write("ref\\hyp," + ",".join(report.labels) + "\n")
        for name, row in zip(report.labels, report.confusion, strict=True):
            table.write(name + "," + ",".join(str(int(count)) for count in row) + "\n")
    counts = report.confusion.astype(np.float64)  # (C, C)
    recall = counts / np.maximum(counts.sum(1, keepdims=True), 1)  # row-normalised
    size = min(4 + 0.12 * len(report.labels), 20)
    fig = Figure(figsize=(size, size))  # no pyplot: no global backend or figure to close
    axes = fig.subplots()
    axes.imshow(recall, cmap="Blues", vmin=0, vmax=1)
    if len(report.labels) <= 80:
        ticks = range(len(report.labels))
        axes.set_xticks(ticks, report.labels, rotation=90, fontsize=6)
        axes.set_yticks(ticks, report.labels, fontsize=6)
    axes.set_xlabel("predicted")
    axes.set_ylabel("reference")
    axes.set_title(f"{report.split}: accuracy {report.accuracy:.3f}")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    for result, name in ((report.decoded, "hyp.txt"), (report.decoded_words, "hyp_words.txt")):
        if result is not None:
            lines = [f"{utt} {' '.join(tokens)}\n" for utt, tokens in result.hypotheses.items()]
            (out / name).write_text("".join(lines))
