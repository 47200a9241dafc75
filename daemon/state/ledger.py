"""The ledger: one SQLite file that is the durable source of truth for a refocusd state dir.

It records every run, every frame with its verdict, action and outcome, and the durable
reconstruction job queue. Rules it enforces:

- ``frames.source_key`` is UNIQUE: the same source is never processed twice, even across
  a crash and restart (:class:`DuplicateSource`).
- A frame decided "reconstruct" and its job are written in one transaction
  (:meth:`Ledger.record_frame_and_enqueue`), so a crash cannot separate them.
- Jobs left ``running`` by a crash go back to the queue at start-up
  (:meth:`Ledger.requeue_running`).

Durability: WAL journal with ``synchronous=NORMAL``. In WAL mode NORMAL never corrupts the
database and loses nothing when the *process* dies (SIGKILL, OOM); only a power cut or OS
crash may roll back the last few commits, and those frames are then simply seen again as
new. FULL would fsync on every commit, which costs more than the per-frame budget on slow
disks. Pass ``synchronous="FULL"`` to :meth:`Ledger.open` to trade speed for that case.

Threads: one connection per Ledger, shared by the runner and the reconstruction worker
thread and serialised by a lock. Other processes (``refocusd status``) open their own Ledger;
WAL lets them read while the daemon writes.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Literal

import structlog

from refocusd.daemon.state.errors import (
    DuplicateSource,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
    translate,
)
from refocusd.daemon.state.frames import FrameRecord
from refocusd.daemon.state.jobs import MAX_INTERRUPTIONS, Job, JobQueue
from refocusd.daemon.state.queries import LedgerQueries
from refocusd.daemon.state.schema import MIGRATIONS, SCHEMA_VERSION
from refocusd.drivers.clock import Clock

__all__ = [
    "LEDGER_FILE",
    "MAX_INTERRUPTIONS",
    "SCHEMA_VERSION",
    "DuplicateSource",
    "FrameRecord",
    "Job",
    "Ledger",
    "LedgerCorrupt",
    "LedgerError",
    "LedgerLocked",
]

log = structlog.get_logger(__name__)

LEDGER_FILE = "ledger.sqlite"  # the file name inside the state folder


class Ledger(JobQueue, LedgerQueries):
    """Thread-safe handle on one ledger file. Use :meth:`open`; close it (or use ``with``).

    Its parts: :class:`~.frames.FrameStore` (runs and frames), :class:`~.jobs.JobQueue`
    (the reconstruction queue), :class:`~.queries.LedgerQueries` (counts and reports),
    all on one :class:`~.connection.LedgerCore`; the schema lives in :mod:`.schema`.
    """

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        clock: Clock | None = None,
        busy_timeout_s: float = 10.0,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        read_only: bool = False,
    ) -> Ledger:
        """Open (creating it and its parent directories unless ``read_only``) and migrate.

        ``read_only`` is for observers such as ``refocusd status``: it never creates a file
        and fails with :class:`LedgerError` if there is no ledger at ``path``.
        """
        path = Path(path)
        if synchronous not in ("NORMAL", "FULL"):
            raise LedgerError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        if read_only:
            if not path.is_file():
                raise LedgerError(f"no ledger at {path}")
        else:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise LedgerError(
                    f"cannot create the ledger directory {path.parent}: {exc}"
                ) from exc
        try:
            if read_only:
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                conn = sqlite3.connect(
                    path,
                    timeout=busy_timeout_s,
                    isolation_level=None,  # autocommit; transactions are explicit (_tx)
                    check_same_thread=False,  # shared across threads, guarded by self._lock
                )
        except sqlite3.Error as exc:
            raise translate(exc, path, "open", busy_timeout_s) from exc
        ledger = cls(conn, path, clock, busy_timeout_s)
        try:
            ledger._configure(synchronous, read_only)
        except BaseException:
            conn.close()
            raise
        return ledger

    def _configure(self, synchronous: str, read_only: bool) -> None:
        with self._guard("open"):
            conn = self._connection()  # busy timeout: set by sqlite3.connect(timeout=...)
            conn.execute("PRAGMA foreign_keys = ON")
            version = conn.execute("PRAGMA user_version").fetchone()[0]  # reads page 1
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {self.path} has schema v{version}, written by a newer refocusd; "
                    f"this version understands up to v{SCHEMA_VERSION}"
                )
            if read_only:
                if version < SCHEMA_VERSION:
                    raise LedgerError(
                        f"ledger {self.path} has schema v{version} (current v{SCHEMA_VERSION}); "
                        "start the daemon once to migrate it"
                    )
                return
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise LedgerError(f"ledger {self.path}: cannot enable WAL (journal_mode={mode})")
            conn.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate(version)

    def _migrate(self, version: int) -> None:
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with self._tx("migrate") as conn:
                # Re-read inside the write lock: another process may have migrated meanwhile.
                current = conn.execute("PRAGMA user_version").fetchone()[0]
                if current >= target:
                    continue
                MIGRATIONS[target - 1](conn)
                conn.execute(f"PRAGMA user_version = {target}")
            log.info("ledger.migrated", path=str(self.path), schema=target)
