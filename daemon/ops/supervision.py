"""Everything that lets a person (or systemd, or Prometheus) watch a running service.

The :class:`Supervisor` is owned by the Service and kept apart from the frame loop: it
meters the classifier and reconstructor, counts outcomes, and runs one background thread
that every ``[health] interval_s`` writes ``health.json``, refreshes the gauges, tells
systemd the status, and applies a configuration reload when SIGHUP asked for one.
"""

from __future__ import annotations

import contextvars
import logging
import os
import threading
import time
from pathlib import Path
from typing import Protocol

import structlog

from refocusd.config import ConfigError, Settings
from refocusd.daemon.core.runner import FrameOutcome
from refocusd.daemon.ops.health import HEALTH_FILE, HealthSnapshot, State, disk_free_bytes, problems, write_health
from refocusd.daemon.ops.metrics import MeteredClassifier, MeteredReconstructor, MetricsServer, ServiceMetrics
from refocusd.daemon.ops.notify import Notifier
from refocusd.daemon.ops.reload import plan_reload
from refocusd.drivers import DriverHealth, HealthReporting, Microscope
from refocusd.models import FocusClassifier, FrameReconstructor

log = structlog.get_logger("refocusd.supervision")

_POLL_S = 0.2  # how quickly a SIGHUP or a stop is noticed by the supervision thread


class QueueView(Protocol):
    """What supervision reads of the job queue (the ledger is one)."""

    def queue_depth(self) -> int: ...

    def oldest_pending_job_at(self) -> float | None: ...


class WorkerView(Protocol):
    """What supervision reads of the reconstruction worker."""

    def alive(self) -> bool: ...


class Supervisor:
    def __init__(
        self,
        settings: Settings,
        *,
        config_path: Path | None = None,
        reload_requested: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = ServiceMetrics()
        self.notifier = Notifier()
        self._config_path = config_path
        self._reload_requested = reload_requested
        self._server = MetricsServer(settings.metrics, self.metrics)
        self._health_path = settings.service.state_dir / HEALTH_FILE
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._classifier: FocusClassifier | None = None
        self._ledger: QueueView | None = None
        self._driver: Microscope | None = None
        self._worker: WorkerView | None = None
        self._run_id = ""
        self._device = ""
        self._frames = 0
        self._last_frame_at: float | None = None
        self._problems: list[str] = []
        self.metrics_url: str | None = None

    # -- hooks called by the Service ------------------------------------------------------

    def wrap_classifier(self, classifier: FocusClassifier) -> MeteredClassifier:
        self._classifier = classifier
        device = classifier.device
        self._device = device.describe()
        self.metrics.set_device(device.kind, device.name)
        return MeteredClassifier(classifier, self.metrics)

    def wrap_reconstructor(self, reconstructor: FrameReconstructor) -> MeteredReconstructor:
        return MeteredReconstructor(reconstructor, self.metrics)

    def on_outcome(self, outcome: FrameOutcome) -> None:
        """An :class:`~refocusd.daemon.core.listeners.OutcomeListener`: count and meter it."""
        self._frames += 1
        self._last_frame_at = time.time()
        self.metrics.observe_outcome(outcome.label, outcome.outcome, outcome.attempts)

    def started(self, *, run_id: str, ledger: QueueView, driver: Microscope, worker: WorkerView) -> None:
        """The service is up: open the metrics endpoint, write health, tell systemd READY."""
        self._run_id, self._ledger, self._driver, self._worker = run_id, ledger, driver, worker
        self.metrics_url = self._server.start()
        self._safe_tick()
        self.notifier.ready(self.status_line())
        self.notifier.start_watchdog(self._alive)
        # Carry run_id/experiment (structlog contextvars) into the thread's log lines.
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="supervision", daemon=True)
        self._thread.start()

    def stopping(self, reason: str) -> None:
        self.notifier.stopping(f"stopping ({reason}); {self.status_line()}")

    def close(self, exit_reason: str) -> None:
        """Stop the thread, write the final health state, close the endpoint."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._ledger is not None:
            try:
                self.tick("stopped", exit_reason=exit_reason)
            except Exception as exc:  # noqa: BLE001 - closing must go on
                log.warning("health.write_failed", error=f"{type(exc).__name__}: {exc}")
        self._server.close()
        self.notifier.close()

    # -- the supervision thread -----------------------------------------------------------

    def _loop(self) -> None:
        next_tick = time.monotonic() + self.settings.health.interval_s
        while not self._closed.wait(_POLL_S):
            if self._reload_requested is not None and self._reload_requested.is_set():
                self._reload_requested.clear()
                try:
                    self.reload()
                except Exception as exc:  # noqa: BLE001 - a failed reload keeps the running configuration
                    log.error("config.reload_failed", error=f"{type(exc).__name__}: {exc}")
            if time.monotonic() >= next_tick:
                self._safe_tick()
                next_tick = time.monotonic() + self.settings.health.interval_s

    def _safe_tick(self) -> None:
        try:
            self.tick("running")
        except Exception as exc:  # noqa: BLE001 - a failed check (disk, ledger busy) must not stop the service
            log.error("health.check_failed", error=f"{type(exc).__name__}: {exc}")

    def _alive(self) -> bool:
        threads_ok = self._thread is not None and self._thread.is_alive()
        return threads_ok and (self._worker is None or self._worker.alive())

    def tick(self, state: State, *, exit_reason: str | None = None) -> HealthSnapshot:
        """Measure, write health.json, refresh the gauges, report changes of health."""
        snap = self.snapshot(state, exit_reason=exit_reason)
        write_health(self._health_path, snap)
        m = self.metrics
        m.queue_depth.set(snap.queue_depth)
        m.up.labels(component="driver").set(0 if snap.driver_up is False else 1)
        m.up.labels(component="worker").set(1 if snap.worker_up else 0)
        if snap.disk_free_bytes is not None:
            m.disk_free_bytes.set(snap.disk_free_bytes)
        if state == "running":
            found = problems(snap, self.settings.health, now=snap.written_at)
            if found != self._problems:
                if found:
                    log.warning("health.unhealthy", problems=found)
                else:
                    log.info("health.recovered")
                self._problems = found
            self.notifier.status(self.status_line(snap))
        return snap

    def snapshot(self, state: State, *, exit_reason: str | None = None) -> HealthSnapshot:
        s = self.settings
        driver = self._driver_health()
        worker_up = self._worker.alive() if self._worker is not None and state == "running" else True
        return HealthSnapshot(
            state=state,
            pid=os.getpid(),
            written_at=time.time(),
            interval_s=s.health.interval_s,
            run_id=self._run_id,
            experiment=s.service.experiment,
            device=self._device,
            frames_processed=self._frames,
            last_frame_at=self._last_frame_at,
            queue_depth=self._ledger.queue_depth() if self._ledger is not None else 0,
            oldest_pending_job_at=self._ledger.oldest_pending_job_at() if self._ledger is not None else None,
            driver_up=None if driver is None else driver.up,
            driver_detail="" if driver is None else driver.detail,
            worker_up=worker_up,
            output_root=str(s.service.output_root),
            disk_free_bytes=disk_free_bytes(s.service.output_root),
            metrics_url=self.metrics_url,
            thresholds=s.health.model_dump(),
            exit_reason=exit_reason,
        )

    def status_line(self, snap: HealthSnapshot | None = None) -> str:
        depth = snap.queue_depth if snap is not None else (self._ledger.queue_depth() if self._ledger else 0)
        health = "; ".join(self._problems) if self._problems else "healthy"
        return f"frames processed {self._frames}, queue depth {depth}, device {self._device or '?'}, {health}"

    def _driver_health(self) -> DriverHealth | None:
        if isinstance(self._driver, HealthReporting):
            try:
                return self._driver.health()
            except Exception as exc:  # noqa: BLE001 - a failing health probe means down
                return DriverHealth(up=False, detail=f"health check failed: {type(exc).__name__}: {exc}")
        return None

    # -- SIGHUP ---------------------------------------------------------------------------

    def reload(self) -> bool:
        """Apply the reloadable part of the configuration file; keep the old one if invalid."""
        if self._config_path is None:
            log.warning("config.reload_unavailable", reason="the service was not started from a file")
            return False
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
        try:
            plan = plan_reload(self._config_path, self.settings)
        except ConfigError as exc:
            log.error("config.reload_rejected", source=exc.source, problems=exc.problems,
                      kept="the running configuration")
            self.notifier.send("READY=1", f"STATUS=reload rejected; {self.status_line()}")
            return False
        new = plan.settings
        if new.logging.level != self.settings.logging.level:
            level = new.logging.level.upper()
            root = logging.getLogger()
            root.setLevel(level)
            for handler in root.handlers:
                handler.setLevel(level)
        if self._classifier is not None:  # every FocusClassifier has a threshold setter
            self._classifier.threshold = new.models.threshold
        self.settings = new
        log.info(
            "config.reloaded",
            source=str(self._config_path),
            applied={k: list(v) for k, v in plan.applied.items()},
            needs_restart=plan.needs_restart,
        )
        self.notifier.send("READY=1", f"STATUS={self.status_line()}")
        return True
