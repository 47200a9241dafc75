"""Read-only questions about a ledger: counts, queue depth, recent errors."""

from __future__ import annotations

from typing import Any

from refocusd.daemon.state.connection import LedgerCore, dicts
from refocusd.daemon.vocabulary import SUMMARY_OUTCOMES, JobState, Outcome


class LedgerQueries(LedgerCore):
    """Report queries (read through the same lock-guarded connection)."""

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
        result.update({str(outcome): by_outcome.get(outcome, 0) for outcome in SUMMARY_OUTCOMES})
        result["failed"] = result["reconstruction_failed"]
        result["outcomes"] = {o: by_outcome.get(o, 0) for o in sorted({*map(str, Outcome), *by_outcome})}
        result["jobs"] = {str(state): by_state.get(state, 0) for state in JobState}
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
            return dicts(
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
