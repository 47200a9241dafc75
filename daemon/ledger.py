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

import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal

import structlog

from refocusd.drivers.base import Coordinates, Frame, SourceRef
from refocusd.drivers.clock import Clock
from refocusd.models.api import Verdict

log = structlog.get_logger(__name__)

Action = Literal["accept", "reacquire", "reconstruct", "quarantine"]
JobState = Literal["queued", "running", "done", "failed"]

ACTIONS: Final = frozenset({"accept", "reacquire", "reconstruct", "quarantine"})
#: Frame outcomes. ``refocusing``/``pending``: decided, action still under way (a crash
#: leaves them so; :meth:`Ledger.recover_interrupted` queues them for reconstruction).
#: ``defocused``/``late``: a re-acquisition that did not save its time point.
OUTCOMES: Final = frozenset(
    {
        "pending",
        "refocusing",
        "accepted",
        "reacquired",
        "defocused",
        "late",
        "refocus_failed",
        "missed",
        "reconstruction_queued",
        "reconstructed",
        "reconstruction_failed",
        "quarantined",
    }
)
#: Outcomes reported as top-level keys of :meth:`Ledger.counts` (all are in ``outcomes``).
SUMMARY_OUTCOMES: Final = (
    "accepted",
    "reacquired",
    "reconstruction_queued",
    "reconstructed",
    "reconstruction_failed",
    "quarantined",
)
INTERRUPTED_OUTCOMES: Final = ("refocusing", "pending")
#: Why a reconstruction was queued.
JOB_REASONS: Final = frozenset(
    {
        "missed_timepoint",
        "refocus_failed",
        "retries_exhausted",
        "no_stage_control",
        "interrupted",
        "manual",
    }
)
JOB_STATES: Final = ("queued", "running", "done", "failed")


LEDGER_FILE = "ledger.sqlite"  # the file name inside the state folder

class LedgerError(RuntimeError):
    """The ledger cannot be used or refused an operation; the message names the file."""


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


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One row of ``frames`` as the runner hands it over (ids and timestamps are the ledger's)."""

    run_id: str
    source_key: str
    source_uri: str
    action: Action
    outcome: str
    experiment: str = ""
    source_page: int | None = None
    plate: str = ""
    well: str = ""
    position: int = 0
    t: int = 0
    z_index: int = 0
    channel: str = ""
    z_um: float | None = None
    acquired_at: float | None = None
    scheduled_at: float | None = None
    deadline: float | None = None
    retry: int = 0
    parent_id: int | None = None
    p_focused: float | None = None
    label: str | None = None
    model_id: str | None = None
    classify_ms: float | None = None
    reason: str | None = None
    decided_ms: float | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise LedgerError(f"unknown action {self.action!r}; expected one of {sorted(ACTIONS)}")
        _check_outcome(self.outcome)
        if not self.source_key:
            raise LedgerError("a frame needs a non-empty source_key")

    @classmethod
    def from_frame(
        cls,
        frame: Frame,
        *,
        run_id: str,
        action: Action,
        outcome: str,
        verdict: Verdict | None = None,
        parent_id: int | None = None,
        reason: str | None = None,
        classify_ms: float | None = None,
        decided_ms: float | None = None,
    ) -> FrameRecord:
        """Build the row from a driver frame and (optionally) the classifier's verdict.

        ``classify_ms`` defaults to the verdict's latency.
        """
        if classify_ms is None and verdict is not None:
            classify_ms = verdict.latency_s * 1000.0
        return cls(
            run_id=run_id,
            experiment=frame.experiment,
            **_source_fields(frame.source),
            **_coord_fields(frame.coords),
            z_um=frame.z_um,
            acquired_at=frame.acquired_at,
            scheduled_at=frame.scheduled_at,
            deadline=frame.deadline,
            retry=frame.retry,
            parent_id=parent_id,
            p_focused=None if verdict is None else float(verdict.p_focused),
            label=None if verdict is None else verdict.label,
            model_id=None if verdict is None else verdict.model_id,
            classify_ms=classify_ms,
            action=action,
            outcome=outcome,
            reason=reason,
            decided_ms=decided_ms,
        )


@dataclass(frozen=True, slots=True)
class Job:
    """A reconstruction job as claimed by the worker (``attempts`` includes this one)."""

    id: int
    frame_id: int
    reason: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    last_error: str | None = None


_FRAME_COLUMNS: Final = tuple(f.name for f in fields(FrameRecord))

# --- schema ---------------------------------------------------------------------------
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
    # Frames a re-focus exposed (strategy planes + re-acquisitions), on the original frame.
    conn.execute("ALTER TABLE frames ADD COLUMN recovery_frames INTEGER")


_MIGRATIONS: Final[tuple[Callable[[sqlite3.Connection], None], ...]] = (_migrate_v1, _migrate_v2, _migrate_v3)
SCHEMA_VERSION: Final = len(_MIGRATIONS)
MAX_INTERRUPTIONS: Final = 5


class Ledger:
    """Thread-safe handle on one ledger file. Use :meth:`open`; close it (or use ``with``)."""

    def __init__(
        self, conn: sqlite3.Connection, path: Path, clock: Clock | None, busy_timeout_s: float
    ) -> None:
        self._conn: sqlite3.Connection | None = conn
        self.path = path
        self._clock = clock
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()

    # --- lifecycle ---------------------------------------------------------------------

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
            raise _translate(exc, path, "open", busy_timeout_s) from exc
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
                _MIGRATIONS[target - 1](conn)
                conn.execute(f"PRAGMA user_version = {target}")
            log.info("ledger.migrated", path=str(self.path), schema=target)

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

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- runs --------------------------------------------------------------------------

    def start_run(self, run_id: str, experiment: str, config_json: str, software: dict) -> None:
        """Record the start of a run. Raises :class:`LedgerError` if ``run_id`` exists."""
        try:
            json.loads(config_json)
        except ValueError as exc:
            raise LedgerError(f"config_json for run {run_id!r} is not valid JSON: {exc}") from exc
        with self._tx("start_run") as conn:
            if conn.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                raise LedgerError(f"run {run_id!r} is already recorded in {self.path}")
            conn.execute(
                "INSERT INTO runs (run_id, experiment, started_at, config_json, host,"
                " software_json) VALUES (?, ?, ?, ?, ?, ?)",
                (run_id, experiment, self._now(), config_json, socket.gethostname(),
                 json.dumps(software, default=str)),
            )

    def stop_run(self, run_id: str, exit_reason: str) -> None:
        with self._tx("stop_run") as conn:
            cur = conn.execute(
                "UPDATE runs SET stopped_at = ?, exit_reason = ? WHERE run_id = ?",
                (self._now(), exit_reason, run_id),
            )
            if cur.rowcount != 1:
                raise LedgerError(f"no run {run_id!r} in {self.path}")

    def runs(self) -> list[dict[str, Any]]:
        """All runs, newest first."""
        with self._guard("runs"):
            return _dicts(
                self._connection().execute(
                    "SELECT * FROM runs ORDER BY started_at DESC, rowid DESC"
                )
            )

    # --- frames ------------------------------------------------------------------------

    def has_source(self, source_key: str) -> bool:
        return self.frame_id_for_source(source_key) is not None

    def frame_id_for_source(self, source_key: str) -> int | None:
        with self._guard("frame_id_for_source"):
            row = self._connection().execute(
                "SELECT id FROM frames WHERE source_key = ?", (source_key,)
            ).fetchone()
        return None if row is None else int(row[0])

    def record_frame(self, rec: FrameRecord) -> int:
        """Insert one frame; returns its id. Raises :class:`DuplicateSource`."""
        with self._tx("record_frame") as conn:
            return self._insert_frame(conn, rec)

    def record_frame_and_enqueue(
        self, rec: FrameRecord, reason: str, payload: Mapping[str, Any], max_attempts: int = 3
    ) -> tuple[int, int]:
        """Insert a frame and its reconstruction job in one transaction: (frame_id, job_id).

        ``rec.action`` must be ``reconstruct``; the frame's outcome is stored as
        ``reconstruction_queued`` whatever ``rec`` says.
        """
        if rec.action != "reconstruct":
            raise LedgerError(
                f"frame {rec.source_key!r} has action {rec.action!r}; only 'reconstruct' "
                "frames are recorded together with a reconstruction job"
            )
        with self._tx("record_frame_and_enqueue") as conn:
            frame_id = self._insert_frame(conn, rec)
            job_id = self._insert_job(conn, frame_id, reason, payload, max_attempts)
        return frame_id, job_id

    def record_quarantine(
        self,
        *,
        run_id: str,
        source: SourceRef,
        reason: str,
        experiment: str = "",
        coords: Coordinates | None = None,
        acquired_at: float | None = None,
        parent_id: int | None = None,
        decided_ms: float | None = None,
    ) -> int:
        """Record an unreadable or invalid frame: no label, action and outcome quarantine."""
        rec = FrameRecord(
            run_id=run_id,
            experiment=experiment,
            **_source_fields(source),
            **_coord_fields(coords or Coordinates()),
            acquired_at=acquired_at,
            parent_id=parent_id,
            action="quarantine",
            outcome="quarantined",
            reason=reason,
            decided_ms=decided_ms,
        )
        return self.record_frame(rec)

    def update_outcome(
        self, frame_id: int, outcome: str, reason: str | None = None, *, recovery_frames: int | None = None
    ) -> None:
        """Set a frame's outcome (and reason, and the frames its re-focus took, when given)."""
        _check_outcome(outcome)
        with self._tx("update_outcome") as conn:
            self._set_outcome(conn, frame_id, outcome, reason)
            if recovery_frames is not None:
                self._set_recovery_frames(conn, frame_id, recovery_frames)

    def set_recovery_frames(self, frame_id: int, frames: int) -> None:
        """Record how many frames a re-focus of ``frame_id`` exposed (planes + re-acquisitions)."""
        with self._tx("set_recovery_frames") as conn:
            self._set_recovery_frames(conn, frame_id, frames)

    def frames(
        self,
        *,
        run_id: str | None = None,
        action: str | None = None,
        outcome: str | None = None,
        label: str | None = None,
        parent_id: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Frames matching every given filter, in insertion order, as column dicts."""
        filters = {"run_id": run_id, "action": action, "outcome": outcome, "label": label,
                   "parent_id": parent_id}
        given = {k: v for k, v in filters.items() if v is not None}
        where = " AND ".join(f"{k} = ?" for k in given) or "1"
        with self._guard("frames"):
            rows = _dicts(
                self._connection().execute(
                    f"SELECT * FROM frames WHERE {where} ORDER BY id", tuple(given.values())
                )
            )
        return iter(rows)

    # --- jobs --------------------------------------------------------------------------

    def enqueue_reconstruction(
        self, frame_id: int, reason: str, payload: Mapping[str, Any], max_attempts: int = 3
    ) -> int:
        """Queue a reconstruction for a recorded frame (e.g. after a failed re-focus).

        Also sets the frame's outcome to ``reconstruction_queued``, in the same transaction.
        """
        with self._tx("enqueue_reconstruction") as conn:
            return self._insert_job(conn, frame_id, reason, payload, max_attempts)

    def claim_job(self) -> Job | None:
        """Take the oldest queued job: it becomes running, attempts + 1. None if idle."""
        now = self._now()
        with self._tx("claim_job") as conn:
            row = conn.execute(
                "SELECT id FROM jobs WHERE state = 'queued'"
                " ORDER BY interruptions, created_at, id LIMIT 1"
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ?,"
                " updated_at = ?, finished_at = NULL WHERE id = ?",
                (now, now, row[0]),
            )
            return _job(conn.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (row[0],)))

    def complete_job(self, job_id: int, output_path: str | Path) -> None:
        """Mark a running job done; its frame's outcome becomes ``reconstructed``."""
        now = self._now()
        with self._tx("complete_job") as conn:
            frame_id = self._running_job_frame(conn, job_id)
            conn.execute(
                "UPDATE jobs SET state = 'done', output_path = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ?",
                (str(output_path), now, now, job_id),
            )
            self._set_outcome(conn, frame_id, "reconstructed", None)

    def fail_job(self, job_id: int, error: str) -> JobState:
        """Record a failed attempt. Back to ``queued`` while attempts remain, else ``failed``
        (and the frame's outcome becomes ``reconstruction_failed``). Returns the new state."""
        now = self._now()
        with self._tx("fail_job") as conn:
            frame_id = self._running_job_frame(conn, job_id)
            attempts, max_attempts = conn.execute(
                "SELECT attempts, max_attempts FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            state: JobState = "queued" if attempts < max_attempts else "failed"
            conn.execute(
                "UPDATE jobs SET state = ?, last_error = ?, updated_at = ?, finished_at = ?"
                " WHERE id = ?",
                (state, error, now, now if state == "failed" else None, job_id),
            )
            if state == "failed":
                self._set_outcome(conn, frame_id, "reconstruction_failed", error)
        return state

    def release_job(self, job_id: int, error: str) -> None:
        """Put a running job back in the queue without counting the attempt: the job was
        fine, the machine was not (e.g. the output disk is full)."""
        now = self._now()
        with self._tx("release_job") as conn:
            self._running_job_frame(conn, job_id)
            conn.execute(
                "UPDATE jobs SET state = 'queued', attempts = attempts - 1, last_error = ?,"
                " updated_at = ? WHERE id = ?",
                (error, now, job_id),
            )

    def requeue_running(self, max_interruptions: int = MAX_INTERRUPTIONS) -> int:
        """At start-up: jobs a crash left ``running`` go back to ``queued``. Returns how many.

        An interruption is not a failed attempt (the machine went down, not the job), so
        it is counted apart, and the job goes behind jobs interrupted fewer times: random
        crashes cannot use up one job's attempts. A job that was running at every one of
        ``max_interruptions`` crashes is taken to cause them (out of memory, say) and is
        marked failed, so it cannot crash-loop the service.
        """
        now = self._now()
        with self._tx("requeue_running") as conn:
            rows = conn.execute(
                "SELECT id, frame_id, interruptions FROM jobs WHERE state = 'running'"
            ).fetchall()
            requeued, failed = [], []
            for job_id, frame_id, interruptions in rows:
                interruptions += 1
                error = f"interrupted {interruptions} time(s): refocusd stopped while this job was running"
                if interruptions < max_interruptions:
                    requeued.append(job_id)
                    conn.execute(
                        "UPDATE jobs SET state = 'queued', attempts = attempts - 1, interruptions = ?,"
                        " last_error = ?, updated_at = ? WHERE id = ?",
                        (interruptions, error, now, job_id),
                    )
                else:
                    failed.append(job_id)
                    conn.execute(
                        "UPDATE jobs SET state = 'failed', interruptions = ?, last_error = ?,"
                        " updated_at = ?, finished_at = ? WHERE id = ?",
                        (interruptions, error, now, now, job_id),
                    )
                    self._set_outcome(conn, frame_id, "reconstruction_failed", error)
        if rows:
            log.warning(
                "ledger.jobs_requeued", path=str(self.path), requeued=requeued, failed=failed
            )
        return len(requeued)

    def recover_interrupted(
        self,
        reason: str = "interrupted",
        *,
        max_attempts: int = 3,
        payload_extra: Mapping[str, Any] | None = None,
    ) -> int:
        """At start-up: frames a crash left mid-action (``refocusing``/``pending``, no job)
        are queued for reconstruction, since their time point has passed. Returns how many.

        The job payload is rebuilt from the frame row (``source_uri``, ``source_page``,
        ``coords``, ``acquired_at``, ``experiment``, ``verdict``) plus ``payload_extra``
        (e.g. ``{"source_root": ...}``). Call it before the new run records frames.
        """
        placeholders = ", ".join("?" * len(INTERRUPTED_OUTCOMES))
        with self._tx("recover_interrupted") as conn:
            cursor = conn.execute(
                f"SELECT * FROM frames WHERE outcome IN ({placeholders}) AND NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE jobs.frame_id = frames.id) ORDER BY id",
                INTERRUPTED_OUTCOMES,
            )
            rows = _dicts(cursor)
            for row in rows:
                payload = {**_payload_from_row(row), **(payload_extra or {})}
                self._insert_job(conn, row["id"], reason, payload, max_attempts)
                self._set_outcome(conn, row["id"], "reconstruction_queued", reason)
        if rows:
            log.warning(
                "ledger.interrupted_frames_queued",
                path=str(self.path),
                frame_ids=[row["id"] for row in rows],
            )
        return len(rows)

    def job(self, job_id: int) -> dict[str, Any] | None:
        """One job row (payload decoded), or None."""
        with self._guard("job"):
            rows = _dicts(self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)))
        if not rows:
            return None
        row = rows[0]
        row["payload"] = json.loads(row.pop("payload_json"))
        return row

    # --- reports -----------------------------------------------------------------------

    def counts(self, run_id: str | None = None) -> dict[str, Any]:
        """Frame counts by label and outcome, and jobs by state (all runs unless ``run_id``).

        ``frames`` counts original frames (one per acquired point); re-acquisitions are
        counted apart in ``reacquisitions``. ``focused``/``defocused`` are the classifier's
        labels of the originals; the :data:`SUMMARY_OUTCOMES` are top-level keys, every
        outcome of an original is in ``outcomes``; ``failed`` is ``reconstruction_failed``;
        ``jobs`` maps each job state to its count.
        """
        where, args = ("WHERE run_id = ?", (run_id,)) if run_id is not None else ("", ())
        job_where = (
            "WHERE frame_id IN (SELECT id FROM frames WHERE run_id = ?)"
            if run_id is not None
            else ""
        )
        with self._guard("counts"):
            conn = self._connection()
            conn.execute("BEGIN")  # one snapshot for all the numbers
            try:
                original = "parent_id IS NULL"
                total, focused, defocused, reacquisitions = conn.execute(
                    f"SELECT COALESCE(SUM({original}), 0),"
                    f" COALESCE(SUM({original} AND label = 'focused'), 0),"
                    f" COALESCE(SUM({original} AND label = 'defocused'), 0),"
                    f" COALESCE(SUM(parent_id IS NOT NULL), 0) FROM frames {where}",
                    args,
                ).fetchone()
                originals_where = f"{where} AND {original}" if where else f"WHERE {original}"
                by_outcome = dict(
                    conn.execute(
                        f"SELECT outcome, COUNT(*) FROM frames {originals_where} GROUP BY outcome", args
                    ).fetchall()
                )
                by_state = dict(
                    conn.execute(
                        f"SELECT state, COUNT(*) FROM jobs {job_where} GROUP BY state", args
                    ).fetchall()
                )
            finally:
                conn.execute("COMMIT")
        result: dict[str, Any] = {
            "frames": total,
            "focused": focused,
            "defocused": defocused,
            "reacquisitions": reacquisitions,
        }
        result.update({outcome: by_outcome.get(outcome, 0) for outcome in SUMMARY_OUTCOMES})
        result["failed"] = result["reconstruction_failed"]
        result["outcomes"] = {o: by_outcome.get(o, 0) for o in sorted({*OUTCOMES, *by_outcome})}
        result["jobs"] = {state: by_state.get(state, 0) for state in JOB_STATES}
        return result

    def queue_depth(self) -> int:
        """Jobs waiting or in progress."""
        with self._guard("queue_depth"):
            return int(
                self._connection().execute(
                    "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
                ).fetchone()[0]
            )

    def oldest_pending_job_at(self) -> float | None:
        """When the oldest job still queued or running was created (epoch s), or None."""
        with self._guard("oldest_pending_job_at"):
            row = self._connection().execute(
                "SELECT MIN(created_at) FROM jobs WHERE state IN ('queued', 'running')"
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def recent_errors(self, limit: int = 10) -> list[dict[str, Any]]:
        """Latest job errors and quarantined frames, newest first.

        Each: ``at`` (epoch s), ``kind`` (``job`` or ``quarantine``), ``frame_id``,
        ``job_id`` (None for quarantines), ``source``, ``state``, ``error``.
        """
        with self._guard("recent_errors"):
            return _dicts(
                self._connection().execute(
                    """
                    SELECT j.updated_at AS at, 'job' AS kind, j.frame_id AS frame_id,
                           j.id AS job_id, f.source_key AS source, j.state AS state,
                           j.last_error AS error
                      FROM jobs j JOIN frames f ON f.id = j.frame_id
                     WHERE j.last_error IS NOT NULL
                    UNION ALL
                    SELECT updated_at, 'quarantine', id, NULL, source_key, outcome, reason
                      FROM frames WHERE action = 'quarantine'
                    ORDER BY at DESC LIMIT ?
                    """,
                    (limit,),
                )
            )

    # --- internals ---------------------------------------------------------------------

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
                raise _translate(exc, self.path, op, self._busy_timeout_s) from exc

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

    def _insert_frame(self, conn: sqlite3.Connection, rec: FrameRecord) -> int:
        now = self._now()
        values = asdict(rec)
        columns = (*_FRAME_COLUMNS, "created_at", "updated_at")
        try:
            cur = conn.execute(
                f"INSERT INTO frames ({', '.join(columns)})"
                f" VALUES ({', '.join('?' * len(columns))})",
                (*(values[c] for c in _FRAME_COLUMNS), now, now),
            )
        except sqlite3.IntegrityError as exc:
            raise self._integrity(conn, rec, exc) from exc
        return int(cur.lastrowid)

    def _integrity(
        self, conn: sqlite3.Connection, rec: FrameRecord, exc: sqlite3.IntegrityError
    ) -> LedgerError:
        message = str(exc)
        if "frames.source_key" in message:
            row = conn.execute(
                "SELECT id FROM frames WHERE source_key = ?", (rec.source_key,)
            ).fetchone()
            return DuplicateSource(rec.source_key, None if row is None else int(row[0]))
        if "FOREIGN KEY" in message:
            return LedgerError(
                f"frame {rec.source_key!r} refers to an unknown run {rec.run_id!r} or parent "
                f"frame {rec.parent_id!r} in {self.path} (call start_run first)"
            )
        return LedgerError(f"cannot record frame {rec.source_key!r} in {self.path}: {message}")

    def _insert_job(
        self,
        conn: sqlite3.Connection,
        frame_id: int,
        reason: str,
        payload: Mapping[str, Any],
        max_attempts: int,
    ) -> int:
        if reason not in JOB_REASONS:
            raise LedgerError(
                f"unknown job reason {reason!r}; expected one of {sorted(JOB_REASONS)}"
            )
        if max_attempts < 1:
            raise LedgerError(f"max_attempts must be at least 1, got {max_attempts}")
        try:
            payload_json = json.dumps(payload, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise LedgerError(f"job payload for frame {frame_id} is not JSON: {exc}") from exc
        now = self._now()
        try:
            cur = conn.execute(
                "INSERT INTO jobs (frame_id, state, reason, payload_json, attempts, max_attempts,"
                " created_at, updated_at) VALUES (?, 'queued', ?, ?, 0, ?, ?, ?)",
                (frame_id, reason, payload_json, max_attempts, now, now),
            )
        except sqlite3.IntegrityError as exc:
            if "jobs.frame_id" in str(exc):
                raise LedgerError(f"frame {frame_id} already has a reconstruction job") from exc
            raise LedgerError(f"no frame {frame_id} in {self.path} to reconstruct") from exc
        self._set_outcome(conn, frame_id, "reconstruction_queued", None)
        return int(cur.lastrowid)

    def _set_outcome(
        self, conn: sqlite3.Connection, frame_id: int, outcome: str, reason: str | None
    ) -> None:
        cur = conn.execute(
            "UPDATE frames SET outcome = ?, reason = COALESCE(?, reason), updated_at = ?"
            " WHERE id = ?",
            (outcome, reason, self._now(), frame_id),
        )
        if cur.rowcount != 1:
            raise LedgerError(f"no frame {frame_id} in {self.path}")

    def _set_recovery_frames(self, conn: sqlite3.Connection, frame_id: int, frames: int) -> None:
        cur = conn.execute("UPDATE frames SET recovery_frames = ? WHERE id = ?", (int(frames), frame_id))
        if cur.rowcount != 1:
            raise LedgerError(f"no frame {frame_id} in {self.path}")

    def _running_job_frame(self, conn: sqlite3.Connection, job_id: int) -> int:
        row = conn.execute("SELECT state, frame_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no job {job_id} in {self.path}")
        if row[0] != "running":
            raise LedgerError(f"job {job_id} is {row[0]}, not running (was it claimed?)")
        return int(row[1])


def _check_outcome(outcome: str) -> None:
    if outcome not in OUTCOMES:
        raise LedgerError(f"unknown outcome {outcome!r}; expected one of {sorted(OUTCOMES)}")


def _source_fields(source: SourceRef) -> dict[str, Any]:
    return {"source_key": source.key, "source_uri": source.uri, "source_page": source.page}


def _coord_fields(coords: Coordinates) -> dict[str, Any]:
    return {
        "plate": coords.plate,
        "well": coords.well,
        "position": coords.position,
        "t": coords.t,
        "z_index": coords.z_index,
        "channel": coords.channel,
    }


def _payload_from_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A job payload for a frame known only from its ledger row (crash recovery)."""
    return {
        "source_uri": row["source_uri"],
        "source_page": row["source_page"],
        "coords": {k: row[k] for k in ("plate", "well", "position", "t", "z_index", "channel")},
        "acquired_at": row["acquired_at"],
        "experiment": row["experiment"],
        "verdict": None
        if row["label"] is None
        else {"p_focused": row["p_focused"], "label": row["label"], "model": row["model_id"]},
    }


def _dicts(cursor: sqlite3.Cursor) -> list[dict[str, Any]]:
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


_JOB_COLUMNS: Final = "id, frame_id, reason, payload_json, attempts, max_attempts, last_error"


def _job(cursor: sqlite3.Cursor) -> Job:
    job_id, frame_id, reason, payload_json, attempts, max_attempts, last_error = cursor.fetchone()
    return Job(
        id=job_id,
        frame_id=frame_id,
        reason=reason,
        payload=json.loads(payload_json),
        attempts=attempts,
        max_attempts=max_attempts,
        last_error=last_error,
    )


def _translate(exc: sqlite3.Error, path: Path, op: str, busy_timeout_s: float) -> LedgerError:
    """A typed, actionable error for a sqlite3 failure."""
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
