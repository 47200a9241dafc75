"""What to do with a classified frame. Pure functions of their inputs: no clock, no I/O.

focused → accept; defocused and the driver can re-acquire before the deadline →
re-focus; otherwise → reconstruct (with the reason recorded). Unreadable frames never
get here: the runner quarantines them.
"""

from __future__ import annotations

from dataclasses import dataclass

from refocusd.daemon.vocabulary import Action, Reason
from refocusd.drivers import Capabilities, Frame
from refocusd.models import Verdict

__all__ = ["Action", "Decision", "Reason", "decide"]


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    reason: Reason


def decide(
    verdict: Verdict,
    frame: Frame,
    capabilities: Capabilities,
    *,
    now: float,
    attempts_made: int,
    max_retries: int,
    expected_refocus_s: float = 0.0,
) -> Decision:
    """Decide for ``frame`` (the original or its latest re-acquisition).

    ``expected_refocus_s`` is how long a re-focus + re-acquisition has been taking; a
    point that cannot be saved before its deadline is not attempted at all.
    """
    late = frame.deadline is not None and frame.acquired_at > frame.deadline
    if frame.retry > 0 and late:
        # A re-acquisition that landed after the deadline does not count for the point.
        return Decision(Action.RECONSTRUCT, Reason.MISSED_TIMEPOINT)
    if verdict.label == "focused":
        return Decision(Action.ACCEPT, Reason.FOCUSED)
    if not capabilities.can_refocus:
        return Decision(Action.RECONSTRUCT, Reason.NO_STAGE_CONTROL)
    if frame.deadline is not None and now + expected_refocus_s > frame.deadline:
        return Decision(Action.RECONSTRUCT, Reason.MISSED_TIMEPOINT)
    if attempts_made >= max_retries:
        return Decision(Action.RECONSTRUCT, Reason.REFOCUS_FAILED)
    return Decision(Action.REFOCUS, Reason.CAN_REACQUIRE)
