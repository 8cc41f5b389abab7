"""``kdpipe run``: a recipe under ``pipelines/<name>`` end to end, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kdpipe.cli._common import console, report_errors

STATE_STYLE = {
    "done": "[dim]done, skipped[/]",
    "resume": "[yellow]interrupted: resuming[/]",
    "changed": "[yellow]settings changed: running again[/]",
    "missing": "[yellow]output gone: running again[/]",
    "new": "[green]running[/]",
}


def _seeds(text: str | None) -> list[int] | None:
    from kdpipe.errors import ConfigError

    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds: expected integers separated by commas, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds: expected distinct integers, got {text!r}")
    return seeds


@report_errors
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe folder holding pipeline.yaml.")],
    size: Annotated[
        str, typer.Option(help="`full`, or a size the recipe defines (e.g. `small`).")
    ] = "full",
    workdir: Annotated[
        Path | None,
        typer.Option(help="Where outputs go (default exp/<recipe>[-<size>]); reruns resume."),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Student seeds, e.g. 1,2,3 (default: the recipe's).")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (what is done, what would run).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe's stages in order; finished, unchanged stages are skipped, so an
    interrupted run resumes and an edited config re-runs only what depends on it. Writes
    results.md and results.json (mean +- std over seeds, test = held-out voices)."""
    from kdpipe.pipeline import load_recipe, plan, run_recipe, write_results

    r = load_recipe(recipe, size, _seeds(seeds))
    work = workdir or Path("exp") / (r.name if size == "full" else f"{r.name}-{size}")
    if dry_run:
        for ex in plan(r, work):
            state = "[green]to run[/]" if ex.state == "new" else STATE_STYLE[ex.state]
            console.print(f"{ex.key:<32} {ex.stage.kind:<8} {state}  {ex.out}", soft_wrap=True)
        return

    def announce(i: int, n: int, ex) -> None:
        console.print(f"[bold][{i + 1}/{n}] {ex.key}[/] ({ex.stage.kind}): {STATE_STYLE[ex.state]}")

    def finished(ex, summary: dict, seconds: float) -> None:
        acc = summary.get("accuracy")
        score = "" if acc is None else f"accuracy {100 * acc:.1f}%, "
        console.print(f"    {ex.key}: {score}{seconds:.0f} s", highlight=False)

    console.print(f"[bold]{r.title or r.name}[/] ({size}, seeds {list(r.seeds)}) -> {work}")
    report = run_recipe(r, work, progress=progress, announce=announce, finished=finished)
    command = f"kdpipe run {recipe}" + (f" --size {size}" if size != "full" else "")
    command += f" --seeds {seeds}" if seeds else ""
    md, _ = write_results(report, command)
    from rich.markdown import Markdown

    console.print(Markdown(md.read_text()))
    console.print(f"results: {md}")
