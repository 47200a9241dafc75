"""What happens to a frame, in one vocabulary: actions, reasons, outcomes and job states.

Every layer (policy, runner, ledger, report, metrics, CLI) speaks these names. They are
StrEnums whose values are the strings stored in SQLite, so ``Outcome.ACCEPTED == "accepted"``
and rows written by any earlier version read back unchanged.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Action(StrEnum):
    """What the policy decided to do with a classified (or unreadable) frame."""

    ACCEPT = "accept"
    REFOCUS = "reacquire"  # re-focus the stage, then re-acquire the point
    RECONSTRUCT = "reconstruct"
    QUARANTINE = "quarantine"


class Reason(StrEnum):
    """Why the policy decided so; the reconstruction reasons are also the jobs' reasons."""

    FOCUSED = "focused"
    CAN_REACQUIRE = "can_reacquire"
    NO_STAGE_CONTROL = "no_stage_control"
    MISSED_TIMEPOINT = "missed_timepoint"
    REFOCUS_FAILED = "refocus_failed"
    INTERRUPTED = "interrupted"  # a crash left the frame mid-action (crash recovery)


#: Reasons a reconstruction job may carry.
JOB_REASONS: Final = frozenset(
    {Reason.MISSED_TIMEPOINT, Reason.REFOCUS_FAILED, Reason.NO_STAGE_CONTROL, Reason.INTERRUPTED}
)


class Category(StrEnum):
    """The report's colour for an outcome, listed most severe first."""

    FAILED = "failed"
    PENDING = "pending"  # decided, action still under way
    RECONSTRUCTED = "reconstructed"
    REACQUIRED = "reacquired"
    ACCEPTED = "accepted"


class Outcome(StrEnum):
    """Where a frame's story ends (or stands, while its action is under way)."""

    REFOCUSING = "refocusing"  # re-focus under way; a crash leaves it so (recovered at start)
    ACCEPTED = "accepted"
    REACQUIRED = "reacquired"  # a re-acquisition saved the point
    DEFOCUSED = "defocused"  # a re-acquisition that was still defocused
    LATE = "late"  # a re-acquisition that came after the point's deadline
    RECONSTRUCTION_QUEUED = "reconstruction_queued"
    RECONSTRUCTED = "reconstructed"
    RECONSTRUCTION_FAILED = "reconstruction_failed"
    QUARANTINED = "quarantined"

    @property
    def category(self) -> Category:
        return _CATEGORY[self]


_CATEGORY: Final = {
    Outcome.REFOCUSING: Category.PENDING,
    Outcome.ACCEPTED: Category.ACCEPTED,
    Outcome.REACQUIRED: Category.REACQUIRED,
    Outcome.DEFOCUSED: Category.PENDING,
    Outcome.LATE: Category.PENDING,
    Outcome.RECONSTRUCTION_QUEUED: Category.PENDING,
    Outcome.RECONSTRUCTED: Category.RECONSTRUCTED,
    Outcome.RECONSTRUCTION_FAILED: Category.FAILED,
    Outcome.QUARANTINED: Category.FAILED,
}

#: Outcomes reported as top-level keys of the ledger's counts (all are in ``outcomes``).
SUMMARY_OUTCOMES: Final = (
    Outcome.ACCEPTED,
    Outcome.REACQUIRED,
    Outcome.RECONSTRUCTION_QUEUED,
    Outcome.RECONSTRUCTED,
    Outcome.RECONSTRUCTION_FAILED,
    Outcome.QUARANTINED,
)
#: Outcomes a crash can leave behind: the action was decided, never finished.
INTERRUPTED_OUTCOMES: Final = (Outcome.REFOCUSING,)


class JobState(StrEnum):
    """A reconstruction job's state in the durable queue."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


def category_of(outcome: str) -> Category:
    """The report category of a stored outcome string (unknown strings count as pending)."""
    try:
        return Outcome(outcome).category
    except ValueError:
        return Category.PENDING
