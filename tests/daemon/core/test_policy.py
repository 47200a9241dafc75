"""The policy as a decision table: pure inputs, an explicit 'now', no sleeping."""

import numpy as np
import pytest

from refocusd.daemon.core.policy import Action, Reason, decide
from refocusd.drivers import Capabilities, Coordinates, Frame, SourceRef
from refocusd.models import Verdict

FULL = Capabilities(move_stage=True, autofocus=True, reacquire=True)
NONE = Capabilities()
AF_ONLY = Capabilities(autofocus=True, reacquire=True)
STAGE_NO_REACQUIRE = Capabilities(move_stage=True, autofocus=True, reacquire=False)

T0 = 1000.0


def frame(*, deadline=None, retry=0, acquired_at=T0):
    return Frame(
        pixels=np.zeros((32, 32), np.uint16),
        coords=Coordinates(plate="p", well="A1"),
        source=SourceRef(uri=f"mem://{retry}"),
        acquired_at=acquired_at,
        deadline=deadline,
        retry=retry,
    )


def verdict(label):
    return Verdict(p_focused=0.9 if label == "focused" else 0.1, label=label, model_id="m", latency_s=0.001)


@pytest.mark.parametrize(
    ("label", "caps", "deadline", "now", "attempts", "expected_s", "retry", "acquired", "action", "reason"),
    [
        ("focused", FULL, None, T0, 0, 0, 0, T0, Action.ACCEPT, Reason.FOCUSED),
        ("focused", NONE, None, T0, 0, 0, 0, T0, Action.ACCEPT, Reason.FOCUSED),
        ("defocused", FULL, None, T0, 0, 0, 0, T0, Action.REFOCUS, Reason.CAN_REACQUIRE),
        ("defocused", AF_ONLY, None, T0, 0, 0, 0, T0, Action.REFOCUS, Reason.CAN_REACQUIRE),
        ("defocused", NONE, None, T0, 0, 0, 0, T0, Action.RECONSTRUCT, Reason.NO_STAGE_CONTROL),
        ("defocused", STAGE_NO_REACQUIRE, None, T0, 0, 0, 0, T0, Action.RECONSTRUCT, Reason.NO_STAGE_CONTROL),
        # deadline still ahead, refocus expected to fit
        ("defocused", FULL, T0 + 60, T0, 0, 5.0, 0, T0, Action.REFOCUS, Reason.CAN_REACQUIRE),
        # deadline passed
        ("defocused", FULL, T0 + 60, T0 + 61, 0, 0, 0, T0, Action.RECONSTRUCT, Reason.MISSED_TIMEPOINT),
        # a refocus is known to take longer than what is left
        ("defocused", FULL, T0 + 2, T0, 0, 5.0, 0, T0, Action.RECONSTRUCT, Reason.MISSED_TIMEPOINT),
        # retries used up
        ("defocused", FULL, None, T0, 2, 0, 0, T0, Action.RECONSTRUCT, Reason.REFOCUS_FAILED),
        ("defocused", FULL, None, T0, 1, 0, 0, T0, Action.REFOCUS, Reason.CAN_REACQUIRE),
        # a focused re-acquisition that landed after the deadline does not save the point
        ("focused", FULL, T0 + 1, T0 + 3, 1, 0, 1, T0 + 3, Action.RECONSTRUCT, Reason.MISSED_TIMEPOINT),
        ("focused", FULL, T0 + 5, T0 + 3, 1, 0, 1, T0 + 3, Action.ACCEPT, Reason.FOCUSED),
        # a late ORIGINAL frame that is focused is still accepted (nothing better exists)
        ("focused", FULL, T0 + 1, T0 + 3, 0, 0, 0, T0 + 3, Action.ACCEPT, Reason.FOCUSED),
    ],
)
def test_decision_table(label, caps, deadline, now, attempts, expected_s, retry, acquired, action, reason):
    decision = decide(
        verdict(label),
        frame(deadline=deadline, retry=retry, acquired_at=acquired),
        caps,
        now=now,
        attempts_made=attempts,
        max_retries=2,
        expected_refocus_s=expected_s,
    )
    assert (decision.action, decision.reason) == (action, reason)
