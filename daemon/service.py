"""Wire a service together from validated settings and run it.

Start-up order matters: the ledger first (recovering what a crash left behind), then the
classifier (loaded and warmed up before the first frame), then the driver; the
reconstructor loads lazily in its worker thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import TextIO

import structlog

from refocusd.config import Settings
from refocusd.config.errors import RefocusdError
from refocusd.daemon.state.ledger import LEDGER_FILE, Ledger
from refocusd.daemon.vocabulary import Reason
from refocusd.daemon.factories import build_backend, build_classifier, build_driver
from refocusd.daemon.core.listeners import CallbackListener, DriverCommit, OutcomeListeners
from refocusd.daemon.core.focus_surface import FocusSurfaceMemory
from refocusd.daemon.core.refocus import build_strategy
from refocusd.daemon.core.runner import FrameOutcome, Runner, RunnerOptions
from refocusd.daemon.ops.supervision import Supervisor
from refocusd.daemon.output.worker import ReconstructionWorker
from refocusd.daemon.ops.preflight import check_writable
from refocusd.drivers import CalibrationSource, Clock, Microscope, OutcomeAware, SimulatedClock, StopAware, SystemClock
from refocusd.models import FocusClassifier, FrameReconstructor
from refocusd.models.quality import QualityRule
from refocusd.models.store import check_model

log = structlog.get_logger("refocusd.service")


@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    frames: int
    focused: int
    defocused: int
    reacquired: int
    reconstructed: int
    not_improved: int  # reconstructed, but the quality score says it does not look better
    reconstruction_failed: int
    queued: int
    quarantined: int
    wall_s: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class StateDirBusy(RefocusdError, RuntimeError):
    """Another refocusd process is using the same state folder."""


def hold_state_lock(state_dir: Path) -> TextIO:
    """One daemon per state folder: a second one would requeue the first one's jobs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / "refocusd.lock", "a+")  # noqa: SIM115 - held for the service's life
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StateDirBusy(f"another refocusd is already running with state folder {state_dir}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def default_clock(settings: Settings, stop: threading.Event) -> Clock:
    if settings.driver.kind == "simulated" and not settings.driver.simulated.realtime:
        return SimulatedClock()
    return SystemClock(wake=stop)


class Service:
    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event | None = None,
        clock: Clock | None = None,
        run_id: str | None = None,
        on_outcome: Callable[[FrameOutcome], None] | None = None,
        driver_factory: Callable[[Settings, Clock], Microscope] = build_driver,
        config_path: Path | None = None,
        reload_requested: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self.clock = clock or default_clock(settings, self.stop)
        self.run_id = run_id or new_run_id()
        self._on_outcome = on_outcome
        self._config_path = config_path
        self._driver_factory = driver_factory
        self.ledger: Ledger | None = None
        self.worker: ReconstructionWorker | None = None
        self._runner: Runner | None = None
        self._driver: Microscope | None = None
        self.startup_s = 0.0
        self._lock: TextIO | None = None
        self._closers: list[Callable[[], None]] = []
        # health.json, metrics, sd_notify and SIGHUP reloads (daemon/ops/supervision.py)
        self.supervisor = Supervisor(settings, config_path=config_path, reload_requested=reload_requested)

    def start(self) -> None:
        """Check the models, load the classifier, open the ledger (recovering what a crash
        left behind), connect the driver, start the reconstruction worker."""
        began = time.perf_counter()
        from refocusd.models.sampling import with_default_pixel_size

        s = self.settings
        structlog.contextvars.bind_contextvars(run_id=self.run_id, experiment=s.service.experiment)
        # What can be checked in milliseconds is checked before seconds of model loading.
        check_writable(s, source=str(self._config_path or "settings"), create=True)
        # The reconstructor loads on the first job; its model must at least exist and
        # match its card now, or the service would fail every job hours later.
        check_model(s.models.reconstructor, "reconstructor")
        classifier = build_classifier(
            s.models.classifier, device=s.models.device, threshold=s.models.threshold,
            mixed_precision=s.models.mixed_precision, crops=s.models.crops,
        )
        classifier = with_default_pixel_size(classifier, s.models.pixel_size_um)
        self._lock = hold_state_lock(s.service.state_dir)
        self.ledger = Ledger.open(s.service.state_dir / LEDGER_FILE)
        self._recover()
        self.ledger.start_run(self.run_id, s.service.experiment, s.model_dump_json(), _software())
        self._driver = self._driver_factory(s, self.clock)
        if s.models.calibrate == "on_start":
            classifier = self._calibrate_on_start(classifier)
        if isinstance(self._driver, StopAware):
            self._driver.bind_stop(self.stop)
        # The driver commits first (the NIS operator alert), then metrics, then the caller.
        listeners = OutcomeListeners()
        if isinstance(self._driver, OutcomeAware):
            listeners.add(DriverCommit(self._driver))
        listeners.add(self.supervisor)
        if self._on_outcome is not None:
            listeners.add(CallbackListener(self._on_outcome))
        load_reconstructor, threads = self._reconstruction_backend()
        self.worker = ReconstructionWorker(
            ledger=self.ledger,
            load_reconstructor=load_reconstructor,
            output_root=s.service.output_root,
            run_id=self.run_id,
            threads=threads,
            disk_full_retry_s=s.reconstruction.disk_full_retry_s,
            classifier=classifier,  # scores every reconstruction against its input
            quality_rule=QualityRule(
                min_logit_gain=s.reconstruction.min_logit_gain,
                min_sharpness_gain=s.reconstruction.min_sharpness_gain,
                min_p_focused=s.reconstruction.min_p_focused,
                min_input_structure=s.reconstruction.min_input_structure,
                defocus_tolerance_um=s.reconstruction.defocus_tolerance_um,
            ),
            write_not_improved=s.reconstruction.write_not_improved,
        )
        self._runner = Runner(
            driver=self._driver,
            classifier=self.supervisor.wrap_classifier(classifier),
            strategy=build_strategy(s.refocus, classifier),
            ledger=self.ledger,
            clock=self.clock,
            options=RunnerOptions(
                run_id=self.run_id,
                experiment=s.service.experiment,
                max_retries=s.refocus.max_retries,
                max_job_attempts=s.reconstruction.max_attempts,
                source_root=_as_str(s.driver.source_root),
                spool_dir=s.service.state_dir / "spool",
            ),
            stop=self.stop,
            on_outcome=listeners,
            focus_memory=FocusSurfaceMemory() if s.refocus.focus_memory else None,
        )
        self.worker.start()
        self.startup_s = time.perf_counter() - began
        log.info(
            "daemon.started",
            driver=s.driver.kind,
            capabilities=asdict(self._driver.capabilities),
            classifier=classifier.model_id,
            device=classifier.device.describe(),
            device_reason=classifier.device.reason,
            startup_s=round(self.startup_s, 3),
            state_dir=str(s.service.state_dir),
            output_root=str(s.service.output_root),
        )
        self.supervisor.started(run_id=self.run_id, ledger=self.ledger, driver=self._driver, worker=self.worker)

    def _calibrate_on_start(self, classifier: FocusClassifier) -> FocusClassifier:
        """Fine-tune the classifier on this sample's z-series before the plan (issue 12)."""
        from refocusd.models.self_calibration import ZStackError, calibrate_from_driver
        from refocusd.models.runtime import load_classifier

        s = self.settings
        driver = self._driver
        if not (isinstance(driver, CalibrationSource) and driver.capabilities.move_stage):
            log.warning("calibrate.unavailable", reason="the driver cannot take z-series (no stage control)",
                        driver=s.driver.kind)
            return classifier
        out = s.service.state_dir / "models" / f"calibrated-{self.run_id}"
        try:
            report = calibrate_from_driver(driver, s.models, out, sample=s.service.experiment)
        except ZStackError as exc:
            log.warning("calibrate.failed", error=str(exc), classifier=classifier.model_id)
            return classifier
        log.info("calibrate.done", folder=str(out), before=report.before.as_dict(), after=report.after.as_dict(),
                 held_out=report.held_out, threshold=round(report.details["threshold"], 6),
                 seconds=round(report.seconds, 1))
        # The sample's own operating point, fitted on the calibration planes.
        return load_classifier(str(out), device=s.models.device, threshold=report.details["threshold"],
                               mixed_precision=s.models.mixed_precision)

    def run(self) -> RunSummary:
        """Run until the driver's plan is complete (then drain the queue) or a stop."""
        assert self._runner is not None and self.worker is not None and self.ledger is not None
        began = time.perf_counter()
        exit_reason = "completed"
        try:
            self._runner.run()
            if self.stop.is_set():
                exit_reason = "stopped"
            log.info("daemon.stopping", reason=exit_reason, queue_depth=self.ledger.queue_depth())
            self.supervisor.stopping(exit_reason)
            # A graceful stop finishes the job in hand; the rest stays queued for next time.
            self.worker.stop(drain=not self.stop.is_set())
        except BaseException:
            exit_reason = "error"
            self.worker.stop(drain=False, timeout=30)
            raise
        finally:
            if self._driver is not None:
                self._driver.close()
            self.ledger.stop_run(self.run_id, exit_reason)
            self.supervisor.close(exit_reason)
        return self.summary(time.perf_counter() - began)

    def summary(self, wall_s: float) -> RunSummary:
        assert self.ledger is not None
        c = self.ledger.counts(run_id=self.run_id)
        return RunSummary(
            run_id=self.run_id,
            frames=c["frames"],
            focused=c["focused"],
            defocused=c["defocused"],
            reacquired=c["reacquired"],
            reconstructed=c["reconstructed"],
            not_improved=c["not_improved"],
            reconstruction_failed=c["reconstruction_failed"],
            queued=c["reconstruction_queued"],
            quarantined=c["quarantined"],
            wall_s=round(wall_s, 3),
        )

    def close(self) -> None:
        for close in self._closers:
            close()
        self._closers.clear()
        if self.ledger is not None:
            self.ledger.close()
        if self._lock is not None:
            self._lock.close()  # closing the descriptor releases the flock
            self._lock = None

    def _reconstruction_backend(self) -> tuple[Callable[[], FrameReconstructor], int]:
        """How jobs get a (metered) reconstructor, and how many run at once."""
        backend = build_backend(self.settings)
        self._closers.append(backend.close)
        return (lambda: self.supervisor.wrap_reconstructor(backend.reconstructor())), backend.threads

    def _recover(self) -> None:
        assert self.ledger is not None
        requeued = self.ledger.requeue_running()
        interrupted = self.ledger.recover_interrupted(
            Reason.INTERRUPTED,
            max_attempts=self.settings.reconstruction.max_attempts,
            source_root=_as_str(self.settings.driver.source_root),
        )
        if requeued or interrupted:
            log.warning("daemon.recovered", jobs_requeued=requeued, refocus_interrupted=interrupted)


def _as_str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _software() -> dict[str, str]:
    return {
        "refocusd": version("refocusd"),
        "python": platform.python_version(),
        "host": socket.gethostname(),
    }


def settings_json(settings: Settings) -> str:
    return json.dumps(settings.model_dump(mode="json"))
