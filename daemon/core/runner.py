"""The loop: frame in → classify → decide → act, every step recorded in the ledger.

The runner owns no hardware and no models: it is handed a driver, a classifier, a
re-focus strategy and a ledger, and reads capabilities rather than driver types.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from refocusd.models.frame_checks import InvalidFrame, as_frame
from refocusd.daemon.output.spool import write_atomically
from refocusd.daemon.state.jobs import ReconstructionRequest, RecordedVerdict
from refocusd.daemon.state.ledger import DuplicateSource, FrameRecord, Ledger
from refocusd.daemon.vocabulary import Action, Outcome, Reason
from refocusd.daemon.core.policy import Decision, decide
from refocusd.daemon.core.focus_surface import FocusSurfaceMemory
from refocusd.daemon.core.refocus import (
    RefocusFailed,
    RefocusRequest,
    RefocusResult,
    RefocusStep,
    RefocusStrategy,
    read_estimate,
)
from refocusd.drivers import (
    Clock,
    Coordinates,
    DriverError,
    FocusStartPlanning,
    Frame,
    FrameUnreadable,
    Microscope,
    StageControl,
)
from refocusd.models import FocusClassifier, Verdict
from refocusd.models.preprocessing import PixelFormatError

log = structlog.get_logger("refocusd.runner")


@dataclass(frozen=True, slots=True)
class FrameOutcome:
    """What happened to one original frame (re-acquisitions are folded in).

    ``decided_ms`` is frame in → first action issued (accept, queue, or start of re-focus).
    """

    coords: Coordinates
    source: str
    label: str | None
    outcome: Outcome
    reason: str | None
    attempts: int
    decided_ms: float
    p_focused: float | None = None  # the classifier's verdict on the frame (None: not classified)


@dataclass(frozen=True, slots=True)
class RunnerOptions:
    run_id: str
    experiment: str
    max_retries: int
    max_job_attempts: int = 3
    source_root: str | None = None
    spool_dir: Path | None = None


class RefocusTimer:
    """Exponentially weighted mean of how long re-focus + re-acquire takes (clock time)."""

    def __init__(self, alpha: float = 0.3) -> None:
        self._alpha = alpha
        self.expected_s = 0.0

    def observe(self, seconds: float) -> None:
        if self.expected_s == 0.0:
            self.expected_s = seconds
        else:
            self.expected_s += self._alpha * (seconds - self.expected_s)


class Runner:
    def __init__(
        self,
        *,
        driver: Microscope,
        classifier: FocusClassifier,
        strategy: RefocusStrategy,
        ledger: Ledger,
        clock: Clock,
        options: RunnerOptions,
        stop: threading.Event | None = None,
        on_outcome: Callable[[FrameOutcome], None] | None = None,
        focus_memory: FocusSurfaceMemory | None = None,
    ) -> None:
        self._driver = driver
        self._stage = driver if isinstance(driver, StageControl) else None
        self._classifier = classifier
        self._strategy = strategy
        self._ledger = ledger
        self._clock = clock
        self._options = options
        self._stop = stop or threading.Event()
        self._on_outcome = on_outcome
        self._timer = RefocusTimer()
        self._memory = focus_memory
        if focus_memory is not None and isinstance(driver, FocusStartPlanning):
            driver.plan_focus_start(focus_memory.start_z)

    def run(self) -> int:
        """Process frames until the driver's plan ends or a stop is requested."""
        processed = 0
        frames = self._driver.frames()
        iterator = iter(frames)
        try:
            while True:
                try:
                    frame = next(iterator)
                except StopIteration:
                    break
                except FrameUnreadable as exc:
                    # Iterator drivers (a watched folder) raise this for one bad file and
                    # go on; a generator ends with it, and the next call stops the loop.
                    self._quarantine_unreadable(exc)
                    if self._stop.is_set():
                        break
                    continue
                outcome = self.process(frame)
                if outcome is not None:
                    processed += 1
                    if self._on_outcome is not None:
                        self._on_outcome(outcome)
                if self._stop.is_set():
                    log.info("runner.stop_requested", processed=processed)
                    break
        finally:
            # getattr: a generator's close() runs its finally blocks; other iterators have none
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        return processed

    def process(self, frame: Frame) -> FrameOutcome | None:
        """Classify, decide and act on one frame; ``None`` if it was processed before."""
        started = time.perf_counter()
        flog = log.bind(
            run_id=self._options.run_id,
            experiment=frame.experiment or self._options.experiment,
            plate=frame.coords.plate,
            well=frame.coords.well,
            position=frame.coords.position,
            t=frame.coords.t,
            source=frame.source.key,
        )
        if self._ledger.has_source(frame.source.key):
            flog.info("frame.duplicate")
            return None
        verdict = None
        try:
            # The one frame validator (the CLI and the worker use it too): an RGBA frame is
            # classified without its alpha, a z-stack is quarantined.
            verdict = self._classifier.classify(as_frame(frame.pixels), pixel_size_um=frame.pixel_size_um)
        except (InvalidFrame, PixelFormatError) as exc:
            problem: str | None = str(exc)
        else:
            problem = None
        if verdict is None:
            self._ledger.record_frame(self._record(frame, None, Action.QUARANTINE, Outcome.QUARANTINED, problem))
            flog.warning("frame.quarantined", reason=problem)
            return self._outcome(frame, None, Outcome.QUARANTINED, problem, 0, _ms(time.perf_counter() - started))

        flog = flog.bind(p_focused=round(verdict.p_focused, 4), label=verdict.label)
        flog.info("frame.classified", model=verdict.model_id, classify_ms=_ms(verdict.latency_s),
                  pixel_size_um=verdict.pixel_size_um, defocus_um=_round3(verdict.defocus_um),
                  defocus_sigma_um=_round3(verdict.defocus_sigma_um))
        decision = self._decide(verdict, frame, attempts=0)
        decided_ms = _ms(time.perf_counter() - started)

        if decision.action is Action.ACCEPT:
            self._ledger.record_frame(
                self._record(frame, verdict, decision.action, Outcome.ACCEPTED, None, decided_ms=decided_ms)
            )
            flog.info("frame.accepted", decided_ms=decided_ms)
            self._remember_focus(frame, verdict)
            return self._outcome(frame, verdict, Outcome.ACCEPTED, None, 0, decided_ms)
        if decision.action is Action.RECONSTRUCT:
            if decision.reason is Reason.NO_STAGE_CONTROL:
                flog.info("reacquire.unavailable", reason=decision.reason.value)
            self._queue(frame, verdict, decision.reason, flog, decided_ms=decided_ms)
            return self._outcome(frame, verdict, Outcome.RECONSTRUCTION_QUEUED, decision.reason, 0, decided_ms)

        # Record the original before touching the stage: a crash mid-refocus leaves it
        # as 'refocusing', which start-up recovery turns into a reconstruction job.
        frame_id = self._ledger.record_frame(
            self._record(frame, verdict, Action.REFOCUS, Outcome.REFOCUSING, decision.reason, decided_ms=decided_ms)
        )
        outcome, reason, attempts = self._save_by_reacquisition(frame, frame_id, verdict, flog)
        return self._outcome(frame, verdict, outcome, reason, attempts, decided_ms)

    def _quarantine_unreadable(self, exc: FrameUnreadable) -> None:
        source = exc.source
        if source is None:
            log.error("frame.unreadable", run_id=self._options.run_id, reason=exc.reason)
            return
        if self._ledger.has_source(source.key):
            log.info("frame.duplicate", source=source.key)
            return
        self._ledger.record_quarantine(
            run_id=self._options.run_id, source=source, reason=exc.reason, experiment=self._options.experiment
        )
        log.warning("frame.quarantined", run_id=self._options.run_id, source=source.key, reason=exc.reason)

    # -- re-focus and re-acquire ------------------------------------------------------

    def _save_by_reacquisition(
        self, frame: Frame, frame_id: int, verdict: Verdict, flog: structlog.typing.FilteringBoundLogger
    ) -> tuple[Outcome, str | None, int]:
        assert self._stage is not None  # guaranteed by capabilities.can_refocus
        attempts = 0
        exposures = 0  # every frame the recovery exposed: strategy planes and re-acquisitions
        latest_pixels, latest_verdict = frame.pixels, verdict
        history: tuple[RefocusStep, ...] = ()
        decision = Decision(Action.REFOCUS, Reason.CAN_REACQUIRE)
        while decision.action is Action.REFOCUS:
            attempts += 1
            began = self._clock.now()
            flog.info("refocus.started", attempt=attempts, strategy=self._strategy.name)
            request = RefocusRequest(
                pixels=latest_pixels, verdict=latest_verdict, attempt=attempts, history=history,
                pixel_size_um=frame.pixel_size_um,
            )
            result = self._refocus(request, attempts, flog)
            if result is not None:
                exposures += result.frames
                for step in result.steps[len(history) :]:
                    flog.info("refocus.step", attempt=attempts, **step.as_log())
                history = result.steps
            retry = None if result is None else self._reacquire(frame, attempts, flog)
            if retry is not None:
                exposures += 1
            self._timer.observe(self._clock.now() - began)
            if retry is None:
                decision = self._decide(verdict, frame, attempts=attempts)
                continue
            retry_verdict = self._classifier.classify(retry.pixels, pixel_size_um=retry.pixel_size_um)
            estimate, sigma = read_estimate(retry_verdict)
            flog.info(
                "refocus.step", attempt=attempts, kind="reacquire", z_um=_round(retry.z_um),
                estimate_um=_round(estimate), sigma_um=_round(sigma),
                p_focused=round(retry_verdict.p_focused, 4), label=retry_verdict.label,
            )
            latest_pixels, latest_verdict = retry.pixels, retry_verdict
            decision = self._decide(retry_verdict, retry, attempts=attempts)
            accepted = decision.action is Action.ACCEPT
            self._ledger.record_frame(
                self._record(
                    retry,
                    retry_verdict,
                    Action.ACCEPT if accepted else Action.REFOCUS,
                    _retry_outcome(decision),
                    None if accepted else decision.reason,
                    parent_id=frame_id,
                )
            )
            if accepted:
                self._ledger.update_outcome(frame_id, Outcome.REACQUIRED, recovery_frames=exposures)
                self._remember_focus(retry, retry_verdict)
                flog.info(
                    "reacquire.done",
                    attempt=attempts,
                    retry_source=retry.source.key,
                    retry_p_focused=round(retry_verdict.p_focused, 4),
                    duration_s=round(self._clock.now() - began, 3),
                    recovery_frames=exposures,
                )
                return Outcome.REACQUIRED, None, attempts
            flog.info("reacquire.rejected", attempt=attempts, retry_label=retry_verdict.label, reason=decision.reason)
        self._ledger.set_recovery_frames(frame_id, exposures)
        self._enqueue(frame, frame_id, verdict, decision.reason, flog)
        return Outcome.RECONSTRUCTION_QUEUED, decision.reason, attempts

    def _refocus(self, request: RefocusRequest, attempt: int, flog) -> RefocusResult | None:
        assert self._stage is not None
        try:
            result = self._strategy.refocus(self._stage, request)
        except RefocusFailed as exc:
            flog.warning("refocus.failed", attempt=attempt, error=str(exc))
            return None
        flog.info("refocus.done", attempt=attempt, z_um=round(result.z_um, 2), method=result.method,
                  planes=result.frames)
        return result

    def _reacquire(self, frame: Frame, attempt: int, flog) -> Frame | None:
        assert self._stage is not None
        try:
            return self._stage.reacquire(frame, attempt)
        except DriverError as exc:
            flog.error("driver.error", during="reacquire", attempt=attempt, error=str(exc))
            return None

    def _remember_focus(self, frame: Frame, verdict: Verdict) -> None:
        """A frame judged focused tells where the focal surface is at its field."""
        if self._memory is None or frame.xy_um is None or frame.z_um is None:
            return
        defocus, sigma = read_estimate(verdict)
        focus = frame.z_um - defocus if defocus is not None and sigma is not None and sigma < 2.0 else frame.z_um
        self._memory.observe(frame.xy_um[0], frame.xy_um[1], self._clock.now(), focus)

    # -- helpers ----------------------------------------------------------------------

    def _decide(self, verdict: Verdict, frame: Frame, *, attempts: int) -> Decision:
        return decide(
            verdict,
            frame,
            self._driver.capabilities,
            now=self._clock.now(),
            attempts_made=attempts,
            max_retries=self._options.max_retries,
            expected_refocus_s=self._timer.expected_s,
        )

    def _queue(self, frame: Frame, verdict: Verdict, reason: Reason, flog, *, decided_ms: float) -> None:
        record = self._record(
            frame, verdict, Action.RECONSTRUCT, Outcome.RECONSTRUCTION_QUEUED, reason, decided_ms=decided_ms
        )
        try:
            _, job_id = self._ledger.record_frame_and_enqueue(
                record, reason.value, self._request(frame, verdict), self._options.max_job_attempts
            )
        except DuplicateSource:
            flog.info("frame.duplicate")
            return
        flog.info("reconstruct.queued", job_id=job_id, reason=reason.value, decided_ms=decided_ms)

    def _enqueue(self, frame: Frame, frame_id: int, verdict: Verdict, reason: Reason, flog) -> None:
        job_id = self._ledger.enqueue_reconstruction(
            frame_id, reason.value, self._request(frame, verdict), self._options.max_job_attempts
        )
        flog.info("reconstruct.queued", job_id=job_id, reason=reason.value)

    def _request(self, frame: Frame, verdict: Verdict) -> ReconstructionRequest:
        uri, page, root = self._durable_source(frame)
        return ReconstructionRequest(
            source_uri=uri,
            source_page=page,
            source_root=root,
            coords=frame.coords.as_dict(),
            acquired_at=frame.acquired_at,
            experiment=frame.experiment or self._options.experiment,
            verdict=RecordedVerdict.from_verdict(verdict),
        )

    def _durable_source(self, frame: Frame) -> tuple[str, int | None, str | None]:
        """A file the reconstruction job can read after a crash.

        Frames that only exist in memory (a driver that does not save, or pixels that
        arrive before the acquisition software writes them) are spooled to the state
        folder first; files on disk are referenced, never copied or modified.
        """
        if Path(frame.source.uri).is_file():
            return frame.source.uri, frame.source.page, self._options.source_root
        if self._options.spool_dir is None:
            raise DriverError(f"frame {frame.source.key} is not on disk and no spool folder is configured")
        name = hashlib.sha256(frame.source.key.encode()).hexdigest()[:16]
        path = self._options.spool_dir / f"{frame.coords.plate or 'frame'}_{frame.coords.well}_{name}.tif"
        write_atomically(path, frame.pixels, metadata={"source": frame.source.key, **frame.coords.as_dict()})
        return str(path), None, str(self._options.spool_dir)

    def _record(
        self,
        frame: Frame,
        verdict: Verdict | None,
        action: Action,
        outcome: Outcome,
        reason: str | None,
        *,
        parent_id: int | None = None,
        decided_ms: float | None = None,
    ) -> FrameRecord:
        return FrameRecord.from_frame(
            frame,
            run_id=self._options.run_id,
            verdict=verdict,
            parent_id=parent_id,
            action=action.value,
            outcome=outcome,
            reason=None if reason is None else str(reason),
            classify_ms=None if verdict is None else _ms(verdict.latency_s),
            decided_ms=decided_ms,
        )

    @staticmethod
    def _outcome(
        frame: Frame, verdict: Verdict | None, outcome: Outcome, reason: str | None, attempts: int, decided_ms: float
    ) -> FrameOutcome:
        return FrameOutcome(
            coords=frame.coords,
            source=frame.source.key,
            label=None if verdict is None else verdict.label,
            outcome=outcome,
            reason=None if reason is None else str(reason),
            attempts=attempts,
            decided_ms=decided_ms,
            p_focused=None if verdict is None else verdict.p_focused,
        )


def _retry_outcome(decision: Decision) -> Outcome:
    if decision.action is Action.ACCEPT:
        return Outcome.ACCEPTED
    return Outcome.LATE if decision.reason is Reason.MISSED_TIMEPOINT else Outcome.DEFOCUSED


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _round3(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)
