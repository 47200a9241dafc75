"""The one error base of refocusd, and the exit codes its errors map to.

Every typed error a layer raises (configuration, model, data, driver, ledger, backend...)
derives from :class:`RefocusdError` and says which exit code it means and how the CLI
labels it. The CLI turns them into a message and that exit code in one place
(``refocusd.daemon.cli.common.user_errors``); library code never prints.

It lives in ``config/`` because every layer (models, drivers, daemon) already depends on it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import ClassVar


class ExitCode(IntEnum):
    """Documented exit codes (README: "Exit codes")."""

    OK = 0
    FAILURES = 1  # the command ran, but some inputs failed; `status`: unhealthy
    USAGE = 2  # bad configuration, bad arguments, unusable model or data: the user can fix it
    RUNTIME = 3  # the service stopped on an error it could not recover from
    INTERRUPTED = 130  # the shell's convention for "stopped by SIGINT"


class RefocusdError(Exception):
    """Base of refocusd's typed errors. Subclasses set ``exit_code`` and ``label``."""

    exit_code: ClassVar[ExitCode] = ExitCode.RUNTIME
    label: ClassVar[str] = "error"  # how the CLI introduces the message


class UsageError(RefocusdError):
    """A mistake the user can fix (configuration, arguments, files they named)."""

    exit_code = ExitCode.USAGE
