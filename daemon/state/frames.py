"""Runs and frames: what the ledger records of every run and every frame."""

from __future__ import annotations

import json
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any, Final

from refocusd.daemon.state.connection import LedgerCore, dicts
from refocusd.daemon.state.errors import DuplicateSource, LedgerError
from refocusd.daemon.vocabulary import Action, Outcome
from refocusd.drivers.base import Coordinates, Frame, SourceRef
from refocusd.models.api import Verdict

_ACTIONS: Final = frozenset(a.value for a in Action)
_OUTCOMES: Final = frozenset(o.value for o in Outcome)


@dataclass(frozen=True, slots=True)
class FrameRecord:
    """One row of ``frames`` as the runner hands it over (ids and timestamps are the ledger's)."""

    run_id: str
    source_key: str
    source_uri: str
    action: Action
    outcome: Outcome
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
        if self.action not in _ACTIONS:
            raise LedgerError(f"unknown action {self.action!r}; expected one of {sorted(_ACTIONS)}")
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
        outcome: Outcome,
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


_FRAME_COLUMNS: Final = tuple(f.name for f in fields(FrameRecord))


class FrameStore(LedgerCore):
    """Runs and frames (the first half of :class:`~refocusd.daemon.state.ledger.Ledger`)."""

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
            return dicts(
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
            action=Action.QUARANTINE,
            outcome=Outcome.QUARANTINED,
            reason=reason,
            decided_ms=decided_ms,
        )
        return self.record_frame(rec)

    def update_outcome(
        self, frame_id: int, outcome: Outcome | str, reason: str | None = None, *, recovery_frames: int | None = None
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
            rows = dicts(
                self._connection().execute(
                    f"SELECT * FROM frames WHERE {where} ORDER BY id", tuple(given.values())
                )
            )
        return iter(rows)

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


def _check_outcome(outcome: str) -> None:
    if outcome not in _OUTCOMES:
        raise LedgerError(f"unknown outcome {outcome!r}; expected one of {sorted(_OUTCOMES)}")


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
