"""File fingerprints in the ledger: which export files were taken, by path and by content.

A table of its own (``nis_files``) in the ledger's SQLite file, created by the ledger's
migrations (``refocusd.daemon.state.schema``, v3): open the ledger before the driver.
Each row is (path, size, mtime_ns, sha256, status). It answers:
was this exact file (path, size, mtime) taken before (a restart's rescan)? Was this content
seen under another path (a rename or move)? Did this path hold other content (replaced)?
The frames table stays the exactly-once guarantee (its keys carry the content hash); this
table only spares re-reading files and explains what happened to them.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from refocusd.drivers.base import DriverError

Status = Literal["processed", "quarantined"]

def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


@dataclass(frozen=True, slots=True)
class Fingerprint:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: Status


class FileFingerprints:
    """Thread-safe; opens its own connection on the (WAL) ledger file."""

    def __init__(self, db_path: Path, *, busy_timeout_s: float = 10.0) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(db_path, timeout=busy_timeout_s, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        if self._conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'nis_files'").fetchone() is None:
            self._conn.close()
            raise DriverError(
                f"{db_path} has no nis_files table: open the ledger first (its migrations create it)"
            )
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, path: Path) -> Fingerprint | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT path, size, mtime_ns, sha256, status FROM nis_files WHERE path = ?", (str(path),)
            ).fetchone()
        return None if row is None else Fingerprint(*row)

    def unchanged(self, path: Path, size: int, mtime_ns: int) -> Fingerprint | None:
        """The row for ``path`` if the file is exactly as it was when last taken."""
        fp = self.get(path)
        return fp if fp is not None and (fp.size, fp.mtime_ns) == (size, mtime_ns) else None

    def paths_with(self, sha256: str) -> list[str]:
        """Paths whose processed content had this hash."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT path FROM nis_files WHERE sha256 = ? AND status = 'processed'", (sha256,)
            ).fetchall()
        return [r[0] for r in rows]

    def remember(
        self, path: Path, size: int, mtime_ns: int, sha256: str | None, status: Status, reason: str | None = None
    ) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO nis_files (path, size, mtime_ns, sha256, status, reason, seen_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size = excluded.size, "
                "mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, status = excluded.status, "
                "reason = excluded.reason, seen_at = excluded.seen_at",
                (str(path), size, mtime_ns, sha256, status, reason, time.time()),
            )
