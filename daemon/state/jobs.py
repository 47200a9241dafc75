"""The durable reconstruction job queue: enqueue, claim, complete, fail, recover."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import structlog

from refocusd.daemon.state.connection import dicts
from refocusd.daemon.state.errors import LedgerError
from refocusd.daemon.state.frames import FrameRecord, FrameStore
from refocusd.daemon.vocabulary import INTERRUPTED_OUTCOMES, JOB_REASONS, Action, JobState, Outcome, Reason

log = structlog.get_logger("refocusd.daemon.state.ledger")

MAX_INTERRUPTIONS: Final = 5


@dataclass(frozen=True, slots=True)
class RecordedVerdict:
    """The classifier's verdict as a job keeps it (the latency does not matter there)."""

    p_focused: float
    label: str
    model: str
    defocus_um: float | None = None  # signed estimate, where the classifier makes one
    defocus_sigma_um: float | None = None
    pixel_size_um: float | None = None  # the sampling the frame was classified at

    @classmethod
    # Any: the state layer does not import models/ (a Verdict-shaped object: p_focused, label, ...)
    def from_verdict(cls, verdict: Any) -> RecordedVerdict:
        """From a :class:`~refocusd.models.api.Verdict`."""
        return cls(p_focused=verdict.p_focused, label=verdict.label, model=verdict.model_id,
                   defocus_um=verdict.defocus_um, defocus_sigma_um=verdict.defocus_sigma_um,
                   pixel_size_um=verdict.pixel_size_um)

    @classmethod
    def from_payload(cls, verdict: Mapping[str, Any]) -> RecordedVerdict:
        def optional(key: str) -> float | None:
            value = verdict.get(key)
            return None if value is None else float(value)

        return cls(p_focused=float(verdict["p_focused"]), label=str(verdict["label"]),
                   model=str(verdict.get("model", "")), defocus_um=optional("defocus_um"),
                   defocus_sigma_um=optional("defocus_sigma_um"), pixel_size_um=optional("pixel_size_um"))


@dataclass(frozen=True, slots=True)
class ReconstructionRequest:
    """What a reconstruction job needs to know: which frame, where it came from, why.

    Stored as the job's JSON payload (:meth:`to_payload`); read back with
    :meth:`from_payload`, which also accepts payloads written by earlier versions.
    """

    source_uri: str
    source_page: int | None = None
    source_root: str | None = None  # the output mirrors the source's place under this root
    coords: Mapping[str, Any] = field(default_factory=dict)
    acquired_at: float | None = None
    experiment: str = ""
    verdict: RecordedVerdict | None = None

    def to_payload(self) -> dict[str, Any]:
        return {
            "source_uri": self.source_uri,
            "source_page": self.source_page,
            "source_root": self.source_root,
            "coords": dict(self.coords),
            "acquired_at": self.acquired_at,
            "experiment": self.experiment,
            # The optional estimates only where the classifier made them (older payloads' shape).
            "verdict": None if self.verdict is None else {
                k: v for k, v in asdict(self.verdict).items()
                if v is not None or k in ("p_focused", "label", "model")
            },
        }

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> ReconstructionRequest:
        if not isinstance(payload.get("source_uri"), str):
            raise LedgerError(f"job payload has no source_uri: {dict(payload)!r}")
        verdict = payload.get("verdict")
        return cls(
            source_uri=payload["source_uri"],
            source_page=payload.get("source_page"),
            source_root=payload.get("source_root"),
            coords=dict(payload.get("coords") or {}),
            acquired_at=payload.get("acquired_at"),
            experiment=payload.get("experiment") or "",
            verdict=None if not verdict else RecordedVerdict.from_payload(verdict),
        )

    @classmethod
    def from_frame_row(cls, row: Mapping[str, Any], *, source_root: str | None) -> ReconstructionRequest:
        """The request for a frame known only from its ledger row (crash recovery)."""
        return cls(
            source_uri=row["source_uri"],
            source_page=row["source_page"],
            source_root=source_root,
            coords={k: row[k] for k in ("plate", "well", "position", "t", "z_index", "channel")},
            acquired_at=row["acquired_at"],
            experiment=row["experiment"],
            verdict=None
            if row["label"] is None
            else RecordedVerdict(p_focused=row["p_focused"], label=row["label"], model=row["model_id"]),
        )


#: What the ledger stores as a job's payload: a request, or (tests, tools) any JSON mapping.
Payload = ReconstructionRequest | Mapping[str, Any]


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

    @property
    def request(self) -> ReconstructionRequest:
        return ReconstructionRequest.from_payload(self.payload)


class JobQueue(FrameStore):
    """The job queue (built on the frames it reconstructs)."""

    def record_frame_and_enqueue(
        self, rec: FrameRecord, reason: str, payload: Payload, max_attempts: int = 3
    ) -> tuple[int, int]:
        """Insert a frame and its reconstruction job in one transaction: (frame_id, job_id).

        ``rec.action`` must be ``reconstruct``; the frame's outcome is stored as
        ``reconstruction_queued`` whatever ``rec`` says.
        """
        if rec.action != Action.RECONSTRUCT:
            raise LedgerError(
                f"frame {rec.source_key!r} has action {rec.action!r}; only 'reconstruct' "
                "frames are recorded together with a reconstruction job"
            )
        with self._tx("record_frame_and_enqueue") as conn:
            frame_id = self._insert_frame(conn, rec)
            job_id = self._insert_job(conn, frame_id, reason, payload, max_attempts)
        return frame_id, job_id

    # --- jobs --------------------------------------------------------------------------

    def enqueue_reconstruction(
        self, frame_id: int, reason: str, payload: Payload, max_attempts: int = 3
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

    def complete_job(
        self, job_id: int, output_path: str | Path | None, *, not_improved: str | None = None
    ) -> None:
        """Mark a running job done; its frame's outcome becomes ``reconstructed``, or
        ``not_improved`` with the reason when the quality score says so. ``output_path`` is
        None when nothing was written (``write_not_improved = false``)."""
        now = self._now()
        with self._tx("complete_job") as conn:
            frame_id = self._running_job_frame(conn, job_id)
            conn.execute(
                "UPDATE jobs SET state = 'done', output_path = ?, finished_at = ?, updated_at = ?"
                " WHERE id = ?",
                (None if output_path is None else str(output_path), now, now, job_id),
            )
            if not_improved is None:
                self._set_outcome(conn, frame_id, Outcome.RECONSTRUCTED, None)
            else:
                self._set_outcome(conn, frame_id, Outcome.NOT_IMPROVED, not_improved)

    def fail_job(self, job_id: int, error: str) -> JobState:
        """Record a failed attempt. Back to ``queued`` while attempts remain, else ``failed``
        (and the frame's outcome becomes ``reconstruction_failed``). Returns the new state."""
        now = self._now()
        with self._tx("fail_job") as conn:
            frame_id = self._running_job_frame(conn, job_id)
            attempts, max_attempts = conn.execute(
                "SELECT attempts, max_attempts FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
            state = JobState.QUEUED if attempts < max_attempts else JobState.FAILED
            conn.execute(
                "UPDATE jobs SET state = ?, last_error = ?, updated_at = ?, finished_at = ?"
                " WHERE id = ?",
                (state, error, now, now if state is JobState.FAILED else None, job_id),
            )
            if state is JobState.FAILED:
                self._set_outcome(conn, frame_id, Outcome.RECONSTRUCTION_FAILED, error)
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
                    self._set_outcome(conn, frame_id, Outcome.RECONSTRUCTION_FAILED, error)
        if rows:
            log.warning(
                "ledger.jobs_requeued", path=str(self.path), requeued=requeued, failed=failed
            )
        return len(requeued)

    def recover_interrupted(
        self,
        reason: str = Reason.INTERRUPTED,
        *,
        max_attempts: int = 3,
        source_root: str | None = None,
    ) -> int:
        """At start-up: frames a crash left mid-action (``refocusing``/``pending``, no job)
        are queued for reconstruction, since their time point has passed. Returns how many.

        The job's :class:`ReconstructionRequest` is rebuilt from the frame row, with the
        service's ``source_root``. Call it before the new run records frames.
        """
        placeholders = ", ".join("?" * len(INTERRUPTED_OUTCOMES))
        with self._tx("recover_interrupted") as conn:
            cursor = conn.execute(
                f"SELECT * FROM frames WHERE outcome IN ({placeholders}) AND NOT EXISTS"
                " (SELECT 1 FROM jobs WHERE jobs.frame_id = frames.id) ORDER BY id",
                INTERRUPTED_OUTCOMES,
            )
            rows = dicts(cursor)
            for row in rows:
                request = ReconstructionRequest.from_frame_row(row, source_root=source_root)
                self._insert_job(conn, row["id"], reason, request, max_attempts)
                self._set_outcome(conn, row["id"], Outcome.RECONSTRUCTION_QUEUED, reason)
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
            rows = dicts(self._connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)))
        if not rows:
            return None
        row = rows[0]
        row["payload"] = json.loads(row.pop("payload_json"))
        return row

    def _insert_job(
        self,
        conn: sqlite3.Connection,
        frame_id: int,
        reason: str,
        payload: Payload,
        max_attempts: int,
    ) -> int:
        if reason not in JOB_REASONS:
            raise LedgerError(
                f"unknown job reason {reason!r}; expected one of {sorted(map(str, JOB_REASONS))}"
            )
        if max_attempts < 1:
            raise LedgerError(f"max_attempts must be at least 1, got {max_attempts}")
        try:
            if isinstance(payload, ReconstructionRequest):
                payload = payload.to_payload()
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
        self._set_outcome(conn, frame_id, Outcome.RECONSTRUCTION_QUEUED, None)
        return int(cur.lastrowid)

    def _running_job_frame(self, conn: sqlite3.Connection, job_id: int) -> int:
        row = conn.execute("SELECT state, frame_id FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise LedgerError(f"no job {job_id} in {self.path}")
        if row[0] != "running":
            raise LedgerError(f"job {job_id} is {row[0]}, not running (was it claimed?)")
        return int(row[1])


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
