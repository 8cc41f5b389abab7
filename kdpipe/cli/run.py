"""``kdpipe run``: a recipe under ``pipelines/<name>`` end to end, resumable."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kdpipe.cli._common import console, report_errors
from kdpipe.errors import ConfigError

if TYPE_CHECKING:
    from kdpipe.pipeline import Execution

STATE_STYLE = {
    "done": "[dim]done, skipped[/]",
    "resume": "[yellow]interrupted: resuming[/]",
    "changed": "[yellow]settings changed: running again[/]",
    "missing": "[yellow]output gone: running again[/]",
    "new": "[green]running[/]",
}


def _seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        seeds = [int(seed) for seed in text.split(",") if seed.strip()]
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
        typer.Option(
            help="Where outputs go (default exp/<recipe>[-<regime>][-<size>]); reruns resume."
        ),
    ] = None,
    seeds: Annotated[
        str | None, typer.Option(help="Student seeds, e.g. 1,2,3 (default: the recipe's).")
    ] = None,
    regime: Annotated[
        str,
        typer.Option(help="A regime the recipe defines (e.g. `aligned`: the papers' labels)."),
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (what is done, what would run).")
    ] = False,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Run a recipe's stages in order; finished, unchanged stages are skipped, so an
    interrupted run resumes and an edited config re-runs only what depends on it. Writes
    results.md and results.json (mean +- std over seeds, test = held-out voices)."""
    from rich.markdown import Markdown

    from kdpipe.pipeline import load_recipe, plan, run_recipe, write_results

    loaded = load_recipe(recipe, size, _seeds(seeds), regime)
    name = "-".join(
        [loaded.name, *([regime] if regime else []), *([size] if size != "full" else [])]
    )
    work = workdir or Path("exp") / name
    if dry_run:
        for step in plan(loaded, work):
            state = "[green]to run[/]" if step.state == "new" else STATE_STYLE[step.state]
            console.print(
                f"{step.key:<32} {step.stage.kind:<8} {state}  {step.out}", soft_wrap=True
            )
        return

    def announce(i: int, n: int, step: Execution) -> None:
        state = STATE_STYLE[step.state]
        console.print(f"[bold][{i + 1}/{n}] {step.key}[/] ({step.stage.kind}): {state}")

    def finished(step: Execution, summary: dict[str, Any], seconds: float) -> None:
        acc = summary.get("accuracy")
        score = "" if acc is None else f"accuracy {100 * acc:.1f}%, "
        console.print(f"    {step.key}: {score}{seconds:.0f} s", highlight=False)

    title = loaded.title or loaded.name
    console.print(f"[bold]{title}[/] ({size}, seeds {list(loaded.seeds)}) -> {work}")
    report = run_recipe(loaded, work, progress=progress, announce=announce, finished=finished)
    command = f"kdpipe run {recipe}" + (f" --regime {regime}" if regime else "")
    command += f" --size {size}" if size != "full" else ""
    command += f" --seeds {seeds}" if seeds else ""
    results_md, _ = write_results(report, command)
    console.print(Markdown(results_md.read_text()))
    console.print(f"results: {results_md}")
