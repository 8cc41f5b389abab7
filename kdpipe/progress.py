"""One progress bar for every long job (synth, prepare, train, teach).

``with progress_bar("teach", total, unit="frames") as advance: advance(n)`` draws a rich bar
on stderr with the count, the rate, elapsed time and ETA; when ``enabled`` is False, or
stderr is not a terminal, ``advance`` does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager


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
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
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
        console=console,
        transient=transient,
    )
    task = bar.add_task(label, total=max(total, 1), speed=0.0)
    with bar:

        def advance(n: int) -> None:
            bar.update(task, advance=n)
            bar.update(task, speed=bar.tasks[0].speed or 0.0)

        yield advance
