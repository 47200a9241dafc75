"""Shared CLI plumbing: the only place that turns typed errors into messages and exit codes."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

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

# Only these tags are styling; any other bracket (``[gpu]``, ``[driver.micromanager]``, a
# bracket in a path or an error) is text and prints as written (#14.25).
_STYLE_TAG = re.compile(r"\[/?(?:(?:bold|dim|italic|red|green|yellow|cyan)(?: (?:red|green|yellow|cyan))?)?\]")


class MessageConsole(Console):
    """A rich console that styles with the CLI's own tags and prints everything else as written."""

    def print(self, *objects: Any, **kwargs: Any) -> None:  # type: ignore[override]
        super().print(*(_escape_text(o) if isinstance(o, str) else o for o in objects), **kwargs)


def _escape_text(text: str) -> str:
    parts, last = [], 0
    for tag in _STYLE_TAG.finditer(text):
        parts.append(escape(text[last:tag.start()]))
        parts.append(tag.group())
        last = tag.end()
    parts.append(escape(text[last:]))
    return "".join(parts)


err_console = MessageConsole(stderr=True, soft_wrap=True)
out_console = MessageConsole()

@contextmanager
def user_errors() -> Iterator[None]:
    """Turn refocusd's typed errors into one clear message and the exit code they carry."""
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[bold red]{exc.label}[/] in {exc.source}:")
        for problem in exc.problems:
            err_console.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(exc.exit_code) from None
    except RefocusdError as exc:
        prefix = f"[bold red]{exc.label}:[/] " if exc.label else ""
        err_console.print(prefix + str(exc), highlight=False)
        raise typer.Exit(exc.exit_code) from None

def print_json(obj: object) -> None:
    """One JSON object per line on stdout (machine-readable output)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
