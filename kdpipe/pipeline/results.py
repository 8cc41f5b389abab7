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
    for ex in report.plan:
        if ex.stage.name == stage:
            v = report.summaries.get(ex.key, {}).get(key)
            if v is not None:
                out.append(100.0 * float(v))
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
    for ex in report.plan:
        if ex.stage.name == stage and ex.key in report.summaries:
            return report.summaries[ex.key].get(key)
    return None


def collect(report: RunReport) -> dict[str, Any]:
    """Rows and claims as plain data (``results.json``)."""
    recipe = report.recipe
    rows = []
    for r in recipe.rows:
        acc = _scores(report, r["stage"], "accuracy")
        per = _scores(report, r["stage"], "phone_error_rate")
        row: dict[str, Any] = {"label": r["label"], "stage": r["stage"], "accuracy": acc}
        row["accuracy_mean"], row["accuracy_std"] = _mean_std(acc)
        if per:
            row["per_mean"], row["per_std"] = _mean_std(per)
        row["parameters"] = _first(report, r["stage"], "parameters")
        if r.get("store") is not None:  # the store this row's model learnt from
            row["bytes_per_frame"] = _first(report, r["store"], "bytes_per_frame")
        rows.append(row)
    claims = []
    for c in recipe.claims:
        a, b = _scores(report, c["better"], "accuracy"), _scores(report, c["than"], "accuracy")
        ma, sa = _mean_std(a)
        mb, sb = _mean_std(b)
        item: dict[str, Any] = {**c, "better_accuracy": ma, "than_accuracy": mb}
        if ma is not None and mb is not None:
            se = math.sqrt(((sa or 0) ** 2) / len(a) + ((sb or 0) ** 2) / len(b))
            err_a, err_b = 100 - ma, 100 - mb
            known = len(a) > 1 and len(b) > 1  # a standard error needs seeds on both sides
            item.update(
                holds=ma > mb,
                difference=ma - mb,
                standard_error=se if known else None,
                # a difference inside two standard errors could be seed noise
                within_noise=known and abs(ma - mb) <= 2 * se,
                relative_error_reduction=(err_b - err_a) / err_b if err_b > 0 else None,
            )
        claims.append(item)
    return {
        "recipe": recipe.name,
        "title": recipe.title,
        "paper": recipe.paper,
        "claim": recipe.claim,
        "size": recipe.size,
        "seeds": list(recipe.seeds),
        "rows": rows,
        "claims": claims,
        "seconds": report.seconds,
        "compute_seconds": report.compute_seconds,
    }


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} +- {std:.1f}"


def to_markdown(res: dict[str, Any], command: str = "") -> str:
    """The table and the claims, as Markdown."""
    has_per = any("per_mean" in r for r in res["rows"])
    has_bytes = any(r.get("bytes_per_frame") is not None for r in res["rows"])
    head = ["Model", "Test accuracy (%)"] + ["PER (%)"] * has_per + ["Params"]
    head += ["Bytes/frame"] * has_bytes + ["Runs"]
    lines = [f"## {res['title'] or res['recipe']} ({res['size']})", ""]
    if res["paper"]:
        lines += [f"Paper: {res['paper']}. Claim: {res['claim']}", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in res["rows"]:
        cells = [r["label"], _pm(r["accuracy_mean"], r["accuracy_std"])]
        if has_per:
            cells.append(_pm(r.get("per_mean"), r.get("per_std")))
        cells.append("-" if not r["parameters"] else f"{r['parameters']:,}")
        if has_bytes:
            b = r.get("bytes_per_frame")
            cells.append("-" if b is None else f"{b:.1f}")
        cells.append(str(len(r["accuracy"])))
        lines.append("| " + " | ".join(cells) + " |")
    if res["claims"]:
        lines += ["", "Claims, checked on the numbers above (test = voices never trained on):"]
    for c in res["claims"]:
        if c.get("holds") is None:
            lines.append(f"- {c['text']}: not measured")
            continue
        se = "" if c["standard_error"] is None else f" +- {c['standard_error']:.1f}"
        rer = c["relative_error_reduction"]
        rer_txt = "" if rer is None else f"; relative error reduction {100 * rer:.1f}%"
        verdict = "holds" if c["holds"] else "does not hold"
        if c["within_noise"]:
            verdict = "within seed noise"
        lines.append(
            f"- {c['text']}: **{verdict}** ({c['better']} {c['better_accuracy']:.1f} vs "
            f"{c['than']} {c['than_accuracy']:.1f}: {c['difference']:+.1f}{se} points{rer_txt})"
        )
    if command:
        minutes = res["compute_seconds"] / 60
        lines += ["", f"Made by `{command}`: {minutes:.0f} min of compute in all stages."]
    return "\n".join(lines) + "\n"


def write_results(report: RunReport, command: str = "") -> tuple[Path, Path]:
    """``results.md`` and ``results.json`` in the work directory."""
    res = collect(report)
    res["command"] = command
    md = report.workdir / RESULTS_MD
    js = report.workdir / RESULTS_JSON
    md.write_text(to_markdown(res, command))
    js.write_text(json.dumps(res, indent=1) + "\n")
    return md, js
