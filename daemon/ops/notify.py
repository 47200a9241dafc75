"""systemd notifications (``Type=notify``): READY, STATUS, WATCHDOG keep-alives, STOPPING.

Uses the ``sdnotify`` package; without ``NOTIFY_SOCKET`` (not under systemd) every call is a
no-op. The watchdog interval comes from ``WATCHDOG_USEC`` (set by systemd from
``WatchdogSec=``); keep-alives go out at half of it, as sd_watchdog_enabled(3) advises, and
only while ``alive()`` says the service's threads still work, so a hung daemon is restarted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

import sdnotify
import structlog

log = structlog.get_logger("refocusd.notify")


def watchdog_interval_s() -> float | None:
    """Half of systemd's ``WATCHDOG_USEC``, or None when the watchdog is off or meant for another PID."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1e6 / 2
    except ValueError:
        log.warning("notify.bad_watchdog_usec", value=usec)
        return None


class Notifier:
    """Talks to systemd's notification socket; silent when there is none."""

    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier = sdnotify.SystemdNotifier() if self.enabled else None
        self._keepalive: threading.Thread | None = None
        self._stop = threading.Event()

    def send(self, *fields: str) -> None:
        if self._notifier is not None:
            self._notifier.notify("\n".join(fields))

    def ready(self, status: str) -> None:
        self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def stopping(self, status: str) -> None:
        self._stop.set()
        self.send("STOPPING=1", f"STATUS={status}")

    def start_watchdog(self, alive: Callable[[], bool]) -> float | None:
        """Send WATCHDOG=1 every WatchdogSec/2 while ``alive()``; returns the interval used."""
        interval = watchdog_interval_s()
        if self._notifier is None or interval is None:
            return None

        def loop() -> None:
            while not self._stop.wait(interval):
                if alive():
                    self.send("WATCHDOG=1")
                else:
                    log.error("notify.watchdog_withheld", reason="a service thread stopped working")

        self.send("WATCHDOG=1")
        self._keepalive = threading.Thread(target=loop, name="sd-watchdog", daemon=True)
        self._keepalive.start()
        log.info("notify.watchdog_started", interval_s=interval)
        return interval

    def close(self) -> None:
        self._stop.set()
        if self._keepalive is not None:
            self._keepalive.join(5)
