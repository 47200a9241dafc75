"""Outcome listeners: each call is guarded, so one failing listener stops nothing."""

from __future__ import annotations

from structlog.testing import capture_logs

from refocusd.daemon.core.listeners import CallbackListener, OutcomeListeners
from refocusd.daemon.core.runner import FrameOutcome
from refocusd.drivers import Coordinates


class Broken:
    def on_outcome(self, outcome: FrameOutcome) -> None:
        raise RuntimeError("metrics backend went away")


def test_a_failing_listener_is_logged_and_the_others_still_hear_the_outcome() -> None:
    heard: list[FrameOutcome] = []
    listeners = OutcomeListeners([Broken(), CallbackListener(heard.append)])
    outcome = FrameOutcome(coords=Coordinates(well="A1"), source="a.tif", label="focused", outcome="accepted",
                           reason=None, attempts=0, decided_ms=1.0)
    with capture_logs() as logs:
        listeners(outcome)
        listeners(outcome)
    assert heard == [outcome, outcome]
    failures = [e for e in logs if e["event"] == "outcome.listener_failed"]
    assert len(failures) == 2 and failures[0]["listener"] == "Broken"
    assert "metrics backend went away" in failures[0]["error"]
