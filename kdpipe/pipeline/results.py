"""A recipe's results: its comparison table (mean +- std over seeds) and its claims checked.

A claim ``{text, better: A, than: B}`` holds when A's mean test accuracy is above B's; the
difference is reported with its standard error, and a difference within two standard errors
(when both sides have several seeds) reads "within seed noise" instead of a verdict.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from kdpipe.pipeline.runner import RunReport

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


def _scores(report: RunReport, stage: str, key: str) -> list[float]:
    """``key`` of every execution of ``stage`` (one per seed), in %, where recorded."""
    out = []
    for step in report.plan:
        if step.stage.name == stage:
            value = report.summaries.get(step.key, {}).get(key)
            if value is not None:
                out.append(100.0 * float(value))
    return out


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def _first(report: RunReport, stage: str, key: str) -> Any:
    for step in report.plan:
        if step.stage.name == stage and step.key in report.summaries:
            return report.summaries[step.key].get(key)
    return None


def collect(report: RunReport) -> dict[str, Any]:
    """Rows and claims as plain data (``results.json``)."""
    recipe = report.recipe
    rows = []
    for wanted in recipe.rows:
        acc = _scores(report, wanted["stage"], "accuracy")
        per = _scores(report, wanted["stage"], "collapsed_per")
        decoded = _scores(report, wanted["stage"], "decoded_per")
        wer = _scores(report, wanted["stage"], "decoded_wer")
        row: dict[str, Any] = {"label": wanted["label"], "stage": wanted["stage"], "accuracy": acc}
        row["accuracy_mean"], row["accuracy_std"] = _mean_std(acc)
        if per:
            row["per_mean"], row["per_std"] = _mean_std(per)
        if decoded:
            row["decoded_per_mean"], row["decoded_per_std"] = _mean_std(decoded)
        if wer:
            row["wer_mean"], row["wer_std"] = _mean_std(wer)
        for key in TRUTH_KEYS:  # frame accuracy against the true phones (aligned regime)
            values = _scores(report, wanted["stage"], key)
            if values:
                row[f"{key}_mean"], row[f"{key}_std"] = _mean_std(values)
        row["parameters"] = _first(report, wanted["stage"], "parameters")
        if _first(report, wanted["stage"], "objective") == "ctc":  # accuracy = 1 - token ER
            row["objective"] = "ctc"
        if wanted.get("store") is not None:  # the store this row's model learnt from
            row["bytes_per_frame"] = _first(report, wanted["store"], "bytes_per_frame")
        rows.append(row)
    claims = []
    for claim in recipe.claims:
        better = _scores(report, claim["better"], "accuracy")
        than = _scores(report, claim["than"], "accuracy")
        item: dict[str, Any] = {**claim, "better_accuracy": _mean_std(better)[0],
                                "than_accuracy": _mean_std(than)[0]}  # fmt: skip
        item.update(_verdict(better, than, errors=False))
        for key, name in ERROR_RATES:  # the papers' measures, where the stages decoded
            rates = _verdict(_scores(report, claim["better"], key),
                             _scores(report, claim["than"], key), errors=True)  # fmt: skip
            if rates:
                item[name] = rates
        better_truth = _scores(report, claim["better"], "truth_accuracy")
        than_truth = _scores(report, claim["than"], "truth_accuracy")
        if better_truth and than_truth:  # the claim judged against the true phones too
            item["truth"] = {**_verdict(better_truth, than_truth, errors=False),
                             "better": _mean_std(better_truth)[0],
                             "than": _mean_std(than_truth)[0]}  # fmt: skip
        claims.append(item)
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "paper": recipe.paper,
        "claim": recipe.claim,
        "size": recipe.size,
        "regime": recipe.regime,
        "seeds": list(recipe.seeds),
        "rows": rows,
        "claims": claims,
        "seconds": report.seconds,
        "compute_seconds": report.compute_seconds,
    }


ERROR_RATES = (("decoded_wer", "wer"), ("decoded_per", "decoded_per"))  # summary key, claim key
# a model's phones against the true phones: all frames, frames whose training label (the
# alignment) was wrong, and the share of such frames (``align.truth.model_truth``)
TRUTH_KEYS = ("truth_accuracy", "truth_accuracy_label_wrong", "label_error")
TRUTH_HEADS = ("True-phone acc. (%)", "... where the alignment is wrong (%)")


def _verdict(better: list[float], than: list[float], errors: bool) -> dict[str, Any]:
    """Whether ``better`` beats ``than`` (per-seed values in %; higher is better unless
    ``errors``): means, difference, standard error, seed noise, relative error reduction."""
    better_mean, better_std = _mean_std(better)
    than_mean, than_std = _mean_std(than)
    if better_mean is None or than_mean is None:
        return {}
    se = math.sqrt(((better_std or 0) ** 2) / len(better) + ((than_std or 0) ** 2) / len(than))
    known = len(better) > 1 and len(than) > 1  # a standard error needs seeds on both
    better_error, than_error = (
        (better_mean, than_mean) if errors else (100 - better_mean, 100 - than_mean)
    )
    out: dict[str, Any] = {"better": better_mean, "than": than_mean} if errors else {}
    out.update(
        holds=better_error < than_error,
        difference=better_mean - than_mean,
        standard_error=se if known else None,
        # a difference inside two standard errors could be seed noise
        within_noise=known and abs(better_mean - than_mean) <= 2 * se,
        relative_error_reduction=(
            (than_error - better_error) / than_error if than_error > 0 else None
        ),
    )
    return out


def _verdict_text(claim: dict[str, Any]) -> str:
    se = "" if claim["standard_error"] is None else f" +- {claim['standard_error']:.1f}"
    rer = claim["relative_error_reduction"]
    rer_txt = "" if rer is None else f"; relative error reduction {100 * rer:.1f}%"
    verdict = "holds" if claim["holds"] else "does not hold"
    if claim["within_noise"]:
        verdict = "within seed noise"
    return f"**{verdict}** ({{}}{claim['difference']:+.1f}{se} points{rer_txt})"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} +- {std:.1f}"


def to_markdown(res: dict[str, Any], command: str = "") -> str:
    """The table and the claims, as Markdown."""
    has_per = any("per_mean" in row for row in res["rows"])
    has_decoded = any("decoded_per_mean" in row for row in res["rows"])
    has_wer = any("wer_mean" in row for row in res["rows"])
    has_bytes = any(row.get("bytes_per_frame") is not None for row in res["rows"])
    has_truth = any("truth_accuracy_mean" in row for row in res["rows"])
    ctc = [row.get("objective") == "ctc" for row in res["rows"]]
    # a CTC model's accuracy is 1 - its greedy token error rate, not a frame accuracy
    accuracy = "Token accuracy (%)" if all(ctc) else "Test accuracy (%)" + ("*" * any(ctc))
    head = ["Model", accuracy] + ["WER (%)"] * has_wer
    head += ["Decoded PER (%)"] * has_decoded + ["Collapsed PER (%)"] * has_per
    head += list(TRUTH_HEADS) * has_truth + ["Params"]
    head += ["Bytes/frame"] * has_bytes + ["Runs"]
    regime = f"{res['regime']}, " if res.get("regime") else ""
    lines = [f"## {res['title'] or res['recipe']} ({regime}{res['size']})", ""]
    if res["paper"]:
        lines += [f"Paper: {res['paper']}. Claim: {res['claim']}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in res["rows"]:
        cells = [row["label"], _pm(row["accuracy_mean"], row["accuracy_std"])]
        if has_wer:
            cells.append(_pm(row.get("wer_mean"), row.get("wer_std")))
        if has_decoded:
            cells.append(_pm(row.get("decoded_per_mean"), row.get("decoded_per_std")))
        if has_per:
            cells.append(_pm(row.get("per_mean"), row.get("per_std")))
        if has_truth:
            for key in TRUTH_KEYS[:2]:
                cells.append(_pm(row.get(f"{key}_mean"), row.get(f"{key}_std")))
        cells.append("-" if not row["parameters"] else f"{row['parameters']:,}")
        if has_bytes:
            per_frame = row.get("bytes_per_frame")
            cells.append("-" if per_frame is None else f"{per_frame:.1f}")
        cells.append(str(len(row["accuracy"])))
        lines.append("| " + " | ".join(cells) + " |")
    if any(ctc) and not all(ctc):
        lines += ["", "\\* CTC models: token accuracy (1 - greedy token error rate)."]
    errors = [row["label_error_mean"] for row in res["rows"] if "label_error_mean" in row]
    if errors:
        lines += ["", f"Test accuracy is against the alignment the models learnt from; the "
                  f"true-phone columns score their phones against the synthetic truth. The "
                  f"alignment is wrong on {errors[0]:.1f}% of the test frames."]  # fmt: skip
    if res["claims"]:
        lines += ["", "Claims, checked on the numbers above (test = voices never trained on):"]
    for claim in res["claims"]:
        if claim.get("holds") is None:
            lines.append(f"- {claim['text']}: not measured")
            continue
        pair = (f"{claim['better']} {claim['better_accuracy']:.1f} vs {claim['than']} "
                f"{claim['than_accuracy']:.1f}: ")  # fmt: skip
        line = f"- {claim['text']}: " + _verdict_text(claim).format(pair)
        for key, name in (("wer", "WER"), ("decoded_per", "decoded PER"),
                          ("truth", "true-phone accuracy")):  # fmt: skip
            if key in claim:
                rates = claim[key]
                line += f"; on {name}: " + _verdict_text(rates).format(
                    f"{rates['better']:.1f} vs {rates['than']:.1f}: "
                )
        lines.append(line)
    if command:
        minutes = res["compute_seconds"] / 60
        lines += ["", f"Made by `{command}`: {minutes:.0f} min of compute in all stages."]
    return "\n".join(lines) + "\n"


def write_results(report: RunReport, command: str = "") -> tuple[Path, Path]:
    """``results.md`` and ``results.json`` in the work directory."""
    res = collect(report)
    res["command"] = command
    markdown = report.workdir / RESULTS_MD
    data = report.workdir / RESULTS_JSON
    markdown.write_text(to_markdown(res, command))
    data.write_text(json.dumps(res, indent=1) + "\n")
    return markdown, data
