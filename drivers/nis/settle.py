"""When is an exported file ready? When its size and mtime have not moved for the settle time.

watchdog announces files before they are complete and polling/SMB/macOS give no close
event, so readiness is decided here by watching ``(size, mtime)``. A file that is stable
but does not parse yet is held (:meth:`SettleTracker.not_ready`) and retried when it
changes; it is given up (quarantined by the caller) once it has been unchanged for
``give_up_s``. Only paths and a few integers are held: memory stays bounded in a burst.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(slots=True)
class _Candidate:
    size: int
    mtime_ns: int
    changed_at: float  # monotonic time (size, mtime) was first seen as it is now
    not_ready: str | None = None  # why the last read failed while the file was stable
    held: bool = False  # handed out as ready: not polled until forgotten or not ready


@dataclass(frozen=True, slots=True)
class SettleResult:
    ready: list[Path]
    vanished: list[Path]
    given_up: list[tuple[Path, str]]


class SettleTracker:
    def __init__(self, settle_s: float, give_up_s: float, *, now: Callable[[], float] = time.monotonic) -> None:
        self.settle_s = settle_s
        self.give_up_s = max(give_up_s, settle_s)
        self._now = now
        self._candidates: dict[Path, _Candidate] = {}

    def __len__(self) -> int:
        return len(self._candidates)

    def __contains__(self, path: Path) -> bool:
        return path in self._candidates

    def offer(self, path: Path) -> None:
        """Start (or keep) tracking ``path``; a tracked file keeps its stability clock."""
        if path not in self._candidates:
            self._candidates[path] = _Candidate(-1, -1, self._now())

    def forget(self, path: Path) -> None:
        self._candidates.pop(path, None)

    def not_ready(self, path: Path, reason: str) -> None:
        """The stable file did not parse: wait for it to change, or give up after ``give_up_s``."""
        candidate = self._candidates.get(path)
        if candidate is not None:
            candidate.not_ready = reason
            candidate.held = False

    def poll(self) -> SettleResult:
        """Stat every candidate; hand back those ready to read, gone, or given up on."""
        now = self._now()
        ready: list[Path] = []
        vanished: list[Path] = []
        given_up: list[tuple[Path, str]] = []
        for path, c in list(self._candidates.items()):
            if c.held:
                continue
            try:
                st = os.stat(path, follow_symlinks=False)
            except FileNotFoundError:
                del self._candidates[path]
                vanished.append(path)
                continue
            except OSError:
                # Permission problems and the like surface when the file is read.
                st = None
            size, mtime_ns = (st.st_size, st.st_mtime_ns) if st is not None else (c.size, c.mtime_ns)
            if (size, mtime_ns) != (c.size, c.mtime_ns):
                c.size, c.mtime_ns, c.changed_at, c.not_ready = size, mtime_ns, now, None
                continue
            stable_for = now - c.changed_at
            if c.not_ready is not None:
                if stable_for >= self.give_up_s:
                    del self._candidates[path]
                    given_up.append((path, c.not_ready))
            elif stable_for >= self.settle_s:
                ready.append(path)
        # Oldest first, so a burst is processed in arrival order.
        ready.sort(key=lambda p: self._candidates[p].changed_at)
        return SettleResult(ready, vanished, given_up)

    def hold(self, path: Path) -> None:
        """Keep a ready path from being handed out again while it is being read."""
        c = self._candidates.get(path)
        if c is not None:
            c.held = True
