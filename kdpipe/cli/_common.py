"""What every command shares: the error boundary (the consoles are ``kdpipe.console``) and
the selection-rule flags of the commands that write stores (teach, store import)."""

from __future__ import annotations

import errno as errnos
import functools
import math
import os
import sys
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from kdpipe.console import console, err_console
from kdpipe.errors import ConfigError, KdpipeError

__all__ = [
    "Full",
    "Mass",
    "Sample",
    "Threshold",
    "TopK",
    "check_number",
    "console",
    "describe_os_error",
    "err_console",
    "report_errors",
]

# the selection rule of a store (at most one; ``kdpipe.teach.rule_from_flags`` checks)
TopK = Annotated[int | None, typer.Option(help="Keep the K most probable classes.")]
Threshold = Annotated[float | None, typer.Option(help="Keep classes with probability >= P.")]
Mass = Annotated[float | None, typer.Option(help="Keep the fewest classes reaching mass M.")]
Sample = Annotated[int | None, typer.Option(help="Keep N draws (unbiased sampled targets).")]
Full = Annotated[bool, typer.Option("--full", help="Keep the dense posterior.")]

F = TypeVar("F", bound=Callable[..., Any])


def written(done: dict[str, Any], also: str = "") -> str:
    """What a store-writing run (teach, store import) did to the store, from its summary's
    ``counts()``: ``N utterances written (S already there[, also][, D dropped at commit]),
    the store holds T (B before this run)``."""
    dropped = f", {done['dropped']:,} dropped at commit: another writer had them"
    return (
        f"{done['utterances']:,} utterances written ({done['skipped']:,} already there{also}"
        f"{dropped if done['dropped'] else ''}), the store holds {done['total']:,} "
        f"({done['before']:,} before this run)"
    )


def check_number(
    value: float | None,
    flag: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """``ConfigError`` naming option ``flag`` unless ``value`` is a finite number in the
    range (None passes): every number is checked where it is parsed."""
    if value is None:
        return
    if not math.isfinite(value):
        raise ConfigError(f"{flag} must be a finite number, got {value}")
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above:
        if low is not None and high is not None:
            span = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
        elif low is not None:
            span = f"{'>' if low_open else '>='} {low:g}"
        else:
            span = f"{'<' if high_open else '<='} {high:g}"
        raise ConfigError(f"{flag} must be {span}, got {value:g}")


def describe_os_error(error: OSError) -> str:
    """``/x/y: read-only file system (errno 30)``: the path and the cause of a failed
    file-system call, in one line."""
    code = error.errno
    cause = error.strerror or (os.strerror(code) if code else "") or str(error) or "I/O error"
    cause = cause[:1].lower() + cause[1:]
    name = errnos.errorcode.get(code, "") if code else ""
    detail = f" (errno {code}{', ' + name if name else ''})" if code else ""
    paths = [str(p) for p in (error.filename, error.filename2) if p is not None]
    if not paths and error.strerror is None and str(error):
        return str(error)  # a library's own OSError("message"): its message is all there is
    return f"{' -> '.join(paths) + ': ' if paths else ''}{cause}{detail}"


def report_errors(fn: F) -> F:
    """Turn a ``KdpipeError`` into one red line on stderr and exit code 1; so too an
    ``OSError`` (a read-only or full disk, a missing path, a file where a folder should
    be): one line naming the path and the cause. What was committed before stays.

    Anything else is a bug and keeps its traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except KdpipeError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False, soft_wrap=True)
            sys.exit(error.exit_code)
        except OSError as error:
            err_console.print(
                f"[bold red]error:[/] {describe_os_error(error)}", highlight=False, soft_wrap=True
            )
            sys.exit(1)
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            sys.exit(130)

    return wrapper  # type: ignore[return-value]
