"""Images handed over from pycromanager's image-processor thread, keyed by their axes."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

Key = tuple[tuple[str, Any], ...]


STOP_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class ArrivedImage:
    pixels: np.ndarray
    metadata: dict[str, Any]
    arrived_at: float


@dataclass
class Inbox:
    """Every wait has a timeout: a camera that returns nothing must not stall the run."""

    _images: dict[Key, ArrivedImage] = field(default_factory=dict)
    _expected: set[Key] = field(default_factory=set)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def expect(self, key: Key) -> None:
        with self._cond:
            self._expected.add(key)

    def put(self, key: Key, image: ArrivedImage) -> None:
        with self._cond:
            self._images[key] = image
            self._expected.discard(key)
            self._cond.notify_all()

    def take(self, key: Key, timeout_s: float, stop: threading.Event | None = None) -> ArrivedImage | None:
        """The image for ``key``; ``None`` after ``timeout_s`` or as soon as ``stop`` is set."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            # Slices: a stop (SIGTERM) between time points wakes the wait within STOP_POLL_S.
            while key not in self._images and not (stop is not None and stop.is_set()):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, STOP_POLL_S))
            image = self._images.pop(key, None)
            if image is None:
                self._expected.discard(key)
            return image

    def wait_idle(self, timeout_s: float) -> bool:
        """True once every expected image has arrived (the engine has nothing in flight)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._expected, timeout=timeout_s)

    def forget_expected(self) -> set[Key]:
        """Drop what an aborted acquisition will never deliver; returns those keys."""
        with self._cond:
            lost, self._expected = self._expected, set()
            return lost
