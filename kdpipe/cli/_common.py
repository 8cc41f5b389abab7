"""What every command shares: the error boundary (the consoles are ``kdpipe.console``) and
the selection-rule flags of the commands that write stores (teach, store import)."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from kdpipe.console import console, err_console
from kdpipe.errors import KdpipeError

__all__ = ["Full", "Mass", "Sample", "Threshold", "TopK", "console", "err_console", "report_errors"]

# the selection rule of a store (at most one; ``kdpipe.teach.rule_from_flags`` checks)
TopK = Annotated[int | None, typer.Option(help="Keep the K most probable classes.")]
Threshold = Annotated[float | None, typer.Option(help="Keep classes with probability >= P.")]
Mass = Annotated[float | None, typer.Option(help="Keep the fewest classes reaching mass M.")]
Sample = Annotated[int | None, typer.Option(help="Keep N draws (unbiased sampled targets).")]
Full = Annotated[bool, typer.Option("--full", help="Keep the dense posterior.")]

F = TypeVar("F", bound=Callable[..., Any])


def report_errors(fn: F) -> F:
    """Turn a ``KdpipeError`` into one red line on stderr and exit code 1.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KdpipeError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
