"""``kdpipe corpus``: synthesize, prepare (features) and summarise corpora."""

from __future__ import annotations

import typer

app = typer.Typer(help="Build, read and prepare corpora.", no_args_is_help=True)

# --- synth (kdpipe.corpus.synth) -------------------------------------------------------

# --- prepare / info (kdpipe.corpus.prepare, kdpipe.corpus.featstore) ------------------
