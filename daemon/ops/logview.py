"""Reading refocusd's JSON log stream back: parse, filter, follow a rotating file.

Used by ``refocusd tail``; the rendering for people lives in the CLI (only the CLI prints).
Following works like ``tail -F``: by polling, so it also works on network shares, and by
re-opening the path when the rotating handler renamed it (the old file is read to its
end first, so no line is lost at a rotation).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from refocusd.config.errors import UsageError

LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class BadFilter(UsageError, ValueError):
    """A filter argument cannot be understood (the message says how to write it)."""


def parse_since(text: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """``15m``, ``2h``, ``1d``, ``90s`` ago, or an ISO time (UTC unless it says otherwise)."""
    now = now or dt.datetime.now(dt.UTC)
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNIT_S[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadFilter(
            f"--since {text!r}: use a duration like 15m, 2h, 1d or an ISO time like 2026-05-01T08:00"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def parse_record(line: str) -> dict[str, Any] | None:
    """The JSON object on a log line, or None for anything else (other programs' output)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def record_time(record: dict[str, Any]) -> dt.datetime | None:
    ts = record.get("ts") or record.get("timestamp")
    if not isinstance(ts, str):
        return None
    try:
        when = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class LogFilter:
    """All given conditions must hold. ``events`` are glob patterns (``reconstruct.*``)."""

    min_level: str | None = None
    events: tuple[str, ...] = ()
    plate: str | None = None
    since: dt.datetime | None = None

    def __post_init__(self) -> None:
        if self.min_level is not None and self.min_level.lower() not in LEVELS:
            raise BadFilter(f"--level {self.min_level!r}: use one of {', '.join(LEVELS)}")

    @property
    def active(self) -> bool:
        return bool(self.min_level or self.events or self.plate or self.since)

    def matches(self, record: dict[str, Any]) -> bool:
        if self.min_level is not None:
            level = LEVELS.get(str(record.get("level", "info")).lower(), 20)
            if level < LEVELS[self.min_level.lower()]:
                return False
        if self.events and not any(fnmatch.fnmatchcase(str(record.get("event", "")), p) for p in self.events):
            return False
        if self.plate is not None and str(record.get("plate", "")) != self.plate:
            return False
        if self.since is not None:
            when = record_time(record)
            if when is None or when < self.since:
                return False
        return True


def read_lines(stream: TextIO) -> Iterator[str]:
    """Lines of a stream as they come (stdin from ``journalctl -f`` never ends)."""
    while True:
        line = stream.readline()
        if not line:
            return
        yield line


def follow(path: Path, *, from_start: bool = True, poll_s: float = 0.25,
           stop: threading.Event | None = None) -> Iterator[str]:
    """Lines of ``path`` now and as they are appended, across rotations and truncations."""
    stop = stop or threading.Event()
    handle: TextIO | None = None
    inode: int | None = None
    partial = ""
    first_open = True
    while not stop.is_set():
        if handle is None:
            try:
                handle = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - kept across yields
            except FileNotFoundError:
                stop.wait(poll_s)
                continue
            inode = os.fstat(handle.fileno()).st_ino
            if first_open and not from_start:
                handle.seek(0, os.SEEK_END)
            first_open = False
        chunk = handle.readline()
        if chunk:
            partial += chunk
            if partial.endswith("\n"):
                yield partial
                partial = ""
            continue
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is None or current.st_ino != inode:
            # Rotated away: whatever the writer appended before the rename is still in
            # the old file; read it to the end, then open the new one.
            yield from _drain(handle, partial)
            handle.close()
            handle, partial = None, ""
            continue
        if current.st_size < handle.tell():  # truncated in place (copytruncate)
            handle.seek(0)
            continue
        stop.wait(poll_s)
    if handle is not None:
        handle.close()


def _drain(handle: TextIO, partial: str) -> Iterable[str]:
    rest = partial + handle.read()
    return [line + "\n" for line in rest.splitlines()]


def rotated_backups(path: Path) -> list[Path]:
    """``FILE.N … FILE.1`` written by the rotating handler, oldest first."""
    backups = []
    for candidate in path.parent.glob(path.name + ".*"):
        suffix = candidate.name[len(path.name) + 1:]
        if suffix.isdigit():
            backups.append((int(suffix), candidate))
    return [p for _, p in sorted(backups, reverse=True)]
