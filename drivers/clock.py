"""Injectable time so that demos and tests run faster than real time and never sleep."""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch (may be virtual)."""
        ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time. ``sleep`` returns early once ``wake`` is set (graceful stop)."""

    def __init__(self, wake: threading.Event | None = None) -> None:
        self._wake = wake or threading.Event()

    def now(self) -> float:
        return time.time()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._wake.wait(seconds)

    @property
    def stop_requested(self) -> bool:
        """True once ``wake`` is set: drivers that wait for data return instead of waiting on."""
        return self._wake.is_set()


class SimulatedClock:
    """Virtual time: ``sleep`` advances the clock instantly. Thread-safe."""

    def __init__(self, start: float = 1_767_225_600.0) -> None:  # 2026-01-01T00:00:00Z
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += seconds
