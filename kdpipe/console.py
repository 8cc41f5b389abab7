"""What a user sees while kdpipe works: the two rich consoles and the one progress bar.

``console`` (stdout) prints results, ``err_console`` (stderr) messages and errors; library
code prints through them too (the trainer's per-epoch rows), so the CLI and the library
share one place for terminal output.

One progress bar serves every long job (synth, prepare, train, teach):
``with progress_bar("teach", total, unit="frames") as advance: advance(n)`` draws a rich bar
on stderr with the count, the rate, elapsed time and ETA; when ``enabled`` is False, or
stderr is not a terminal, ``advance`` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


@contextmanager
def progress_bar(
    label: str,
    total: int,
    *,
    enabled: bool = True,
    unit: str = "",
    transient: bool = True,
) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n)``, which moves the bar ``n`` steps."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not err_console.is_terminal:
        yield lambda n: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[speed]:,.0f} " + (unit or "items") + "/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=transient,
    )
    task = bar.add_task(label, total=max(total, 1), speed=0.0)
    with bar:

        def advance(n: int) -> None:
            bar.update(task, advance=n)
            bar.update(task, speed=bar.tasks[0].speed or 0.0)

        yield advance
