"""The ledger's schema: its tables, and the migrations that bring any older file up to date."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Final

# _MIGRATIONS[i] takes the schema from version i to i + 1. Never edit a released step;
# append a new one. SQLite cannot alter CHECK constraints, so value sets (actions,
# outcomes, reasons) are validated in Python instead and can grow without a table rebuild.

_V1: Final = (
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        experiment TEXT NOT NULL DEFAULT '',
        started_at REAL NOT NULL,
        stopped_at REAL,
        exit_reason TEXT,
        config_json TEXT NOT NULL DEFAULT '{}',
        host TEXT NOT NULL DEFAULT '',
        software_json TEXT NOT NULL DEFAULT '{}'
    )""",
    """CREATE TABLE frames (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs(run_id),
        experiment TEXT NOT NULL DEFAULT '',
        source_key TEXT NOT NULL UNIQUE,
        source_uri TEXT NOT NULL,
        source_page INTEGER,
        plate TEXT NOT NULL DEFAULT '',
        well TEXT NOT NULL DEFAULT '',
        position INTEGER NOT NULL DEFAULT 0,
        t INTEGER NOT NULL DEFAULT 0,
        z_index INTEGER NOT NULL DEFAULT 0,
        channel TEXT NOT NULL DEFAULT '',
        z_um REAL,
        acquired_at REAL,
        scheduled_at REAL,
        deadline REAL,
        retry INTEGER NOT NULL DEFAULT 0,
        parent_id INTEGER REFERENCES frames(id),
        p_focused REAL,
        label TEXT,
        model_id TEXT,
        classify_ms REAL,
        action TEXT NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT,
        decided_ms REAL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    )""",
    "CREATE INDEX frames_run ON frames(run_id)",
    "CREATE INDEX frames_label_action ON frames(label, action)",
    "CREATE INDEX frames_outcome ON frames(outcome)",
    "CREATE INDEX frames_site_time ON frames(plate, well, position, t)",
    "CREATE INDEX frames_parent ON frames(parent_id)",
    """CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        frame_id INTEGER NOT NULL UNIQUE REFERENCES frames(id),
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'done', 'failed')),
        reason TEXT NOT NULL,
        payload_json TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        last_error TEXT,
        output_path TEXT,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL
    )""",
    "CREATE INDEX jobs_state ON jobs(state, created_at, id)",
)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


def _migrate_v2(conn: sqlite3.Connection) -> None:
    # Crashes during a job are counted apart from failed attempts (see requeue_running).
    conn.execute("ALTER TABLE jobs ADD COLUMN interruptions INTEGER NOT NULL DEFAULT 0")


def _migrate_v3(conn: sqlite3.Connection) -> None:
    # The NIS driver's file fingerprints (drivers/nis/fingerprints.py): which export files
    # were taken, by path and by content. Earlier versions created the table from the
    # driver itself, hence IF NOT EXISTS.
    conn.execute(
        """CREATE TABLE IF NOT EXISTS nis_files (
            path TEXT PRIMARY KEY,
            size INTEGER NOT NULL,
            mtime_ns INTEGER NOT NULL,
            sha256 TEXT,
            status TEXT NOT NULL,
            reason TEXT,
            seen_at REAL NOT NULL
        )"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS nis_files_sha256 ON nis_files(sha256)")


def _migrate_v4(conn: sqlite3.Connection) -> None:
    # Frames a re-focus exposed (strategy planes + re-acquisitions), on the original frame.
    conn.execute("ALTER TABLE frames ADD COLUMN recovery_frames INTEGER")


MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (
    _migrate_v1, _migrate_v2, _migrate_v3, _migrate_v4,
)
SCHEMA_VERSION: Final = len(MIGRATIONS)
