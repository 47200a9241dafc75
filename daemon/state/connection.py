"""One lock-guarded SQLite connection with typed errors and explicit write transactions.

The parts of the ledger (frames, jobs, queries) build on this core; see :mod:`.ledger`.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Self

from refocusd.daemon.state.errors import LedgerError, translate
from refocusd.drivers.clock import Clock


class LedgerCore:
    """The connection, its lock and clock. Not used alone: :class:`Ledger` opens one."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, clock: Clock | None, busy_timeout_s: float
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    @property
    def closed(self) -> bool:
        return self._conn is None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> float:
        return self._clock.now() if self._clock is not None else time.time()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise LedgerError(f"ledger {self.path} is closed")
        return self._conn

    @contextmanager
    def _guard(self, op: str) -> Iterator[None]:
        """Hold the lock and turn sqlite3 errors into typed LedgerErrors."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise translate(exc, self.path, op, self._busy_timeout_s) from exc

    @contextmanager
    def _tx(self, op: str) -> Iterator[sqlite3.Connection]:
        """A write transaction. BEGIN IMMEDIATE takes the write lock up front, so a
        transaction never fails half-way because another writer got there first."""
        with self._guard(op):
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):  # the original error matters more
                        conn.execute("ROLLBACK")
                raise


def dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    """Rows as column-name dicts."""
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
