"""Who hears what happened to each frame: metrics, health, the CLI's progress bar, the
driver's commit (and the NIS operator alert behind it).

Each is an :class:`OutcomeListener`; :class:`OutcomeListeners` calls them in order and
guards every call, as pymmcore-plus guards its event handlers: one failing listener is
logged and cannot stop acquisition or the other listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

import structlog

from refocusd.daemon.core.runner import FrameOutcome
from refocusd.drivers import OutcomeAware

log = structlog.get_logger("refocusd.listeners")


@runtime_checkable
class OutcomeListener(Protocol):
    def on_outcome(self, outcome: FrameOutcome) -> None: ...


class CallbackListener:
    """A plain function as a listener (the CLI's progress bar)."""

    def __init__(self, callback: Callable[[FrameOutcome], None]) -> None:
        self._callback = callback

    def on_outcome(self, outcome: FrameOutcome) -> None:
        self._callback(outcome)


class DriverCommit:
    """Tells an :class:`~refocusd.drivers.OutcomeAware` driver the outcome of its frame."""

    def __init__(self, driver: OutcomeAware) -> None:
        self._driver = driver

    def on_outcome(self, outcome: FrameOutcome) -> None:
        self._driver.observe_outcome(outcome.source, outcome.label, outcome.outcome)


class OutcomeListeners:
    """The runner's ``on_outcome``: every registered listener, each call guarded."""

    def __init__(self, listeners: Iterable[OutcomeListener] = ()) -> None:
        self._listeners: list[OutcomeListener] = list(listeners)

    def add(self, listener: OutcomeListener) -> None:
        self._listeners.append(listener)

    def __call__(self, outcome: FrameOutcome) -> None:
        for listener in self._listeners:
            try:
                listener.on_outcome(outcome)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not stop acquisition
                log.error(
                    "outcome.listener_failed",
                    listener=type(listener).__name__,
                    source=outcome.source,
                    error=f"{type(exc).__name__}: {exc}",
                )
