"""The ``kdpipe`` command: sub-command groups for each stage of the flow.

Importing this module must stay cheap (no torch, zarr or polars): each command imports
what it needs when it runs.
"""

from __future__ import annotations

import typer

from kdpipe import __version__
from kdpipe.cli import corpus, learn, run, store, teach

app = typer.Typer(
    name="kdpipe",
    help="Two-phase offline knowledge distillation for speech acoustic models.\n\n"
    "corpus -> teach (once, into a Zarr target store) -> learn (many students).",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
app.add_typer(corpus.app, name="corpus")
app.add_typer(store.app, name="store")
app.command("learn")(learn.learn)
app.command("eval")(learn.evaluate)
app.command("teach")(teach.teach)
app.command("run")(run.run)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kdpipe {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """kdpipe: teach once, learn many."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
