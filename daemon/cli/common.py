"""Shared CLI plumbing: the only place that turns typed errors into messages and exit codes."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.console import Console
from rich.markup import escape

from refocusd.config import ConfigError
from refocusd.config.errors import ExitCode, RefocusdError

# Documented exit codes (README: "Exit codes"); the errors carry theirs (config/errors.py).
EXIT_OK = ExitCode.OK
EXIT_FAILURES = ExitCode.FAILURES  # the command ran, but some inputs failed
EXIT_USAGE = ExitCode.USAGE  # bad configuration, bad arguments, unusable model
EXIT_RUNTIME = ExitCode.RUNTIME  # the service stopped on an error it could not recover from
EXIT_INTERRUPTED = ExitCode.INTERRUPTED
EXIT_UNHEALTHY = EXIT_FAILURES  # `refocusd status`: the service is unhealthy (monitoring)

err_console = Console(stderr=True, soft_wrap=True)
out_console = Console()

@contextmanager
def user_errors() -> Iterator[None]:
    """Turn refocusd's typed errors into one clear message and the exit code they carry."""
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[bold red]{exc.label}[/] in {escape(exc.source)}:")
        for problem in exc.problems:
            err_console.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except RefocusdError as exc:
        prefix = f"[bold red]{exc.label}:[/] " if exc.label else ""
        err_console.print(prefix + escape(str(exc)), highlight=False)
        raise typer.Exit(exc.exit_code) from None

def print_json(obj: object) -> None:
    """One JSON object per line on stdout (machine-readable output)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
