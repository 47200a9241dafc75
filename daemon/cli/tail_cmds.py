"""``refocusd tail``: the JSON log stream as coloured lines a person can read."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from refocusd.daemon.cli.common import EXIT_USAGE, err_console
from refocusd.daemon.ops.logview import (
    BadFilter,
    LogFilter,
    follow,
    parse_record,
    parse_since,
    read_lines,
    rotated_backups,
)

_LEVEL_STYLE = {
    "debug": "dim", "info": "green", "warning": "bold yellow", "error": "bold red", "critical": "bold white on red",
}
_EVENT_STYLE = {
    "frame.accepted": "green",
    "frame.quarantined": "red",
    "reacquire.done": "bold green",
    "reacquire.rejected": "yellow",
    "reconstruct.done": "magenta",
    "reconstruct.failed": "bold red",
    "reconstruct.queued": "magenta",
    "driver.error": "bold red",
    "health.unhealthy": "bold red",
    "config.reload_rejected": "bold red",
}
_FAMILY_STYLE = {"refocus": "cyan", "daemon": "bold blue", "config": "blue", "metrics": "blue", "health": "blue"}
# Shown in the line's head or too noisy to repeat on every line.
_HIDDEN = {"ts", "timestamp", "level", "event", "run_id", "experiment", "plate", "well", "position", "t", "logger"}


def render(record: dict[str, Any]) -> Text:
    """``2026-05-01 08:00:01Z  INFO  frame.accepted  plate1/A1#0 t3  p_focused=0.98 ...``"""
    line = Text()
    ts = str(record.get("ts", record.get("timestamp", "")))
    line.append((ts[:10] + " " + ts[11:19] + "Z") if len(ts) >= 19 else ts.ljust(20), style="dim")
    level = str(record.get("level", "info")).lower()
    line.append(f"  {level.upper():<7}", style=_LEVEL_STYLE.get(level, ""))
    event = str(record.get("event", ""))
    style = _EVENT_STYLE.get(event) or _FAMILY_STYLE.get(event.split(".", 1)[0], "bold")
    line.append(f" {event:<22}", style=style)
    where = _where(record)
    if where:
        line.append(f" {where}", style="bold")
    for key, value in record.items():
        if key in _HIDDEN or value is None:
            continue
        line.append(f" {key}=", style="dim")
        line.append(_short(value))
    return line


def _where(record: dict[str, Any]) -> str:
    plate, well = record.get("plate"), record.get("well")
    if not plate and not well:
        return ""
    where = f"{plate or ''}/{well or ''}"
    if record.get("position") is not None:
        where += f"#{record['position']}"
    if record.get("t") is not None:
        where += f" t{record['t']}"
    return where


def _short(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = str(value)
    return text if len(text) <= 200 else text[:197] + "..."


def _lines(source: str, *, follow_it: bool, with_rotated: bool) -> Iterator[str]:
    if source == "-":
        if sys.stdin.isatty():
            err_console.print("[bold red]error:[/] give a log FILE, or pipe the journal: "
                              "journalctl -u refocusd -o cat -f | refocusd tail -")
            raise typer.Exit(EXIT_USAGE)
        yield from read_lines(sys.stdin)
        return
    path = Path(source)
    if not follow_it and not path.is_file():
        err_console.print(f"[bold red]error:[/] no log file {path}")
        raise typer.Exit(EXIT_USAGE)
    if with_rotated:
        for backup in rotated_backups(path):
            with open(backup, encoding="utf-8", errors="replace") as fh:
                yield from fh
    if follow_it:
        yield from follow(path)
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from fh


def tail(
    source: str = typer.Argument("-", metavar="[FILE|-]", help="JSON log file, or - for stdin (journalctl -o cat -f)."),
    follow_it: bool = typer.Option(False, "--follow", "-f", help="Keep reading as lines are added (follows rotation)."),
    level: str | None = typer.Option(None, "--level", "-l", help="Minimum level: debug, info, warning, error."),
    events: list[str] = typer.Option([], "--event", "-e", help="Event name or glob (reconstruct.*); repeatable."),
    plate: str | None = typer.Option(None, "--plate", "-p", help="Only lines about this plate."),
    since: str | None = typer.Option(None, "--since", "-s", help="Only lines newer than 15m, 2h, 1d or an ISO time."),
    with_rotated: bool = typer.Option(False, "--rotated", help="First read FILE.N ... FILE.1 (rotated-away lines)."),
    color: bool | None = typer.Option(None, "--color/--no-color", help="Force colours on/off (default: on a TTY)."),
) -> None:
    """Render refocusd's JSON logs as readable coloured lines; filters combine (AND)."""
    try:
        wanted = LogFilter(min_level=level, events=tuple(events), plate=plate,
                           since=parse_since(since) if since else None)
    except BadFilter as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(EXIT_USAGE) from None
    console = Console(highlight=False, soft_wrap=True, force_terminal=color, no_color=color is False)
    try:
        for raw in _lines(source, follow_it=follow_it, with_rotated=with_rotated):
            record = parse_record(raw)
            if record is None:
                if not wanted.active and raw.strip():  # other programs' lines, unfiltered only
                    console.print(Text(raw.rstrip("\n"), style="dim"))
                continue
            if wanted.matches(record):
                console.print(render(record))
                console.file.flush()
    except (KeyboardInterrupt, BrokenPipeError):
        pass


def register(app: typer.Typer) -> None:
    app.command("tail")(tail)
