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
from refocusd.daemon.errors import BackendUnavailable
from refocusd.drivers import DriverConfigError, DriverError
from refocusd.models import ModelError

# Documented exit codes (README: "Exit codes").
EXIT_OK = 0
EXIT_FAILURES = 1  # the command ran, but some inputs failed
EXIT_USAGE = 2  # bad configuration, bad arguments, unusable model
EXIT_RUNTIME = 3  # the service stopped on an error it could not recover from
EXIT_UNHEALTHY = EXIT_FAILURES  # `refocusd status`: the service is unhealthy (monitoring)

# Only these tags are styling; any other bracket (``[gpu]``, ``[driver.micromanager]``, a
# bracket in a path or an error) is text and prints as written.
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
    """Turn the errors a user can fix into one clear message and exit code 2."""
    try:
        yield
    except ConfigError as exc:
        err_console.print(f"[bold red]configuration error[/] in {exc.source}:")
        for problem in exc.problems:
            err_console.print(f"  - {problem}", markup=False, highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except ModelError as exc:
        err_console.print(f"[bold red]model error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except DriverConfigError as exc:  # before DriverError: a mistake in the file, not an outage
        err_console.print(f"[bold red]microscope configuration error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    except DriverError as exc:
        err_console.print(f"[bold red]microscope error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_RUNTIME) from None
    except BackendUnavailable as exc:
        err_console.print(f"[bold red]reconstruction backend error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_RUNTIME) from None


def print_json(obj: Any) -> None:
    """One JSON object per line on stdout (machine-readable output)."""
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()
