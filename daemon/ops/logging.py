"""structlog configuration. Only entry points call :func:`configure_logging`.

JSON lines on stdout when it is not a terminal (journald), a coloured console on a
terminal, and optionally a rotating JSON-lines file as well.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path
from typing import Literal, TextIO

import structlog

_SHARED_PROCESSORS: list[structlog.typing.Processor] = [
    structlog.contextvars.merge_contextvars,
    structlog.processors.add_log_level,
    structlog.processors.TimeStamper(fmt="iso", utc=True, key="ts"),
    structlog.processors.StackInfoRenderer(),
    structlog.processors.format_exc_info,
]


def configure_logging(
    *,
    level: str = "info",
    fmt: Literal["auto", "json", "console"] = "auto",
    file: Path | None = None,
    file_max_bytes: int = 20_000_000,
    file_backups: int = 5,
    stream: TextIO | None = None,
    console_level: str | None = None,
) -> None:
    """Route structlog through stdlib logging to the console and an optional file.

    ``console_level`` lets a command with its own progress display (``refocusd demo``)
    keep the console quiet while the file receives everything.
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    console_renderer = (
        structlog.dev.ConsoleRenderer(colors=True)
        if use_console
        else structlog.processors.JSONRenderer(sort_keys=False)
    )
    # TensorFlow's Python logger warns about tf.function retracing during warm-up: noise
    # for a lab manager reading the service log.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(level.upper())

    handler = logging.StreamHandler(stream)
    handler.setLevel((console_level or level).upper())
    handler.setFormatter(_formatter(console_renderer))
    root.addHandler(handler)
    if file is not None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(
            file, maxBytes=file_max_bytes, backupCount=file_backups, encoding="utf-8"
        )
        file_handler.setFormatter(_formatter(structlog.processors.JSONRenderer()))
        root.addHandler(file_handler)

    structlog.configure(
        processors=[*_SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def _formatter(renderer: structlog.typing.Processor) -> structlog.stdlib.ProcessorFormatter:
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_SHARED_PROCESSORS,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
