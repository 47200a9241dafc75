"""The ledger's typed errors, and the translation of sqlite3 failures into them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from refocusd.config.errors import RefocusdError


class LedgerError(RefocusdError, RuntimeError):
    """The ledger cannot be used or refused an operation; the message names the file."""

    label = "ledger error"


class LedgerLocked(LedgerError):
    """Another process held the database for longer than the busy timeout."""


class LedgerCorrupt(LedgerError):
    """The file is not a SQLite database, or its pages are damaged."""


class DuplicateSource(LedgerError):
    """A frame with this source key is already recorded (it must not be processed twice)."""

    def __init__(self, source_key: str, frame_id: int | None) -> None:
        super().__init__(f"source {source_key!r} is already recorded as frame {frame_id}")
        self.source_key = source_key
        self.frame_id = frame_id


def translate(exc: sqlite3.Error, path: Path, op: str, busy_timeout_s: float) -> LedgerError:
    """A typed, actionable error for a sqlite3 failure."""
    # sqlite_errorname exists from Python 3.11 on some builds only: fall back to the text.
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return LedgerLocked(
            f"ledger {path} is locked by another process (waited {busy_timeout_s:g} s during "
            f"{op}); is another refocusd using the same state directory?"
        )
    if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")) or "not a database" in text or (
        "malformed" in text
    ):
        return LedgerCorrupt(
            f"ledger {path} is not a usable SQLite database ({text}); move it aside to start "
            "a new ledger (it is never overwritten automatically)"
        )
    if name.startswith("SQLITE_FULL"):
        return LedgerError(f"ledger {path}: disk full during {op} ({text})")
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_READONLY", "SQLITE_PERM")):
        return LedgerError(f"cannot open ledger {path} for {op}: {text}")
    return LedgerError(f"ledger {path}: {op} failed: {text}")
