"""Run mode: refocusd runs the acquisition plan through pycromanager and acts between frames.

The plan's events are submitted one at a time (up to ``lookahead`` events ahead of the frame
the runner holds, and only once they are due), so the runner's decision on a frame comes
before everything but that look-ahead. Each image comes in through ``image_process_fn`` (which only hands it over and
returns at once: the image is still saved to the NDTiff dataset), and ``frames()`` yields it.
When the runner re-focuses, the driver first waits until the engine has nothing in flight,
moves the stage back to the held frame's field, drives the focus and camera through the
core, and re-acquires by queueing the same event, tagged with a ``retry`` axis and the
re-focused z, into the running acquisition. ``mark_finished`` is called only at the end of
the plan, after every queued retry has delivered its image.

Never stalls: every wait has a timeout; core errors are retried with back-off
(:class:`CoreSession`) and then surface as ``DriverError`` (the runner turns that into a
reconstruction); a point whose image never arrives is marked (an empty frame the runner
quarantines) and the acquisition is restarted for the rest of the plan.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import numpy as np
import structlog

from refocusd.config.settings import MicroManagerSettings, TimelapseSettings
from refocusd.drivers import pixel_size
from refocusd.drivers.base import Capabilities, DriverError, DriverHealth, Frame, SourceRef, ZPlanes
from refocusd.drivers.clock import Clock
from refocusd.drivers.micromanager.inbox import ArrivedImage, Inbox
from refocusd.drivers.micromanager.plan import PlanStep, axes_key, load_sequence, plan_steps
from refocusd.drivers.micromanager.session import CoreSession

log = structlog.get_logger(__name__)

FINISH_TIMEOUT_S = 30.0
STOP_FINISH_TIMEOUT_S = 3.0
DUE_POLL_S = 1.0  # the clock is re-read this often while a time point is awaited


@dataclasses.dataclass(slots=True)
class _Held:
    step: PlanStep
    frame: Frame
    stage_ready: bool = False


class MicroManagerRunDriver:
    """Implements ``Microscope``, ``StageControl`` and ``HealthReporting``."""

    def __init__(
        self,
        settings: MicroManagerSettings,
        timelapse: TimelapseSettings,
        *,
        clock: Clock,
        experiment: str = "",
        plate: str = "",
        session: CoreSession | None = None,
        lookahead: int = 1,
    ) -> None:
        self.settings = settings
        self.session = session or CoreSession(settings)
        self._clock = clock
        self._experiment = experiment
        self._steps = plan_steps(load_sequence(settings), timelapse, plate=plate)
        self._lookahead = max(0, lookahead)
        self._inbox = Inbox()
        self._acq: Any = None  # Any: pycromanager's Acquisition (untyped)
        self._acq_count = 0
        self._dataset_dir: Path | None = None
        self._started_at = 0.0
        self._held: _Held | None = None
        self._hook_errors = 0
        self._last_plan_event: dict[str, Any] | None = None  # None: the stage may be anywhere
        self._closed = False
        self._stop = threading.Event()  # the service's, once bound: every wait wakes on it

    # -- Microscope --------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(move_stage=True, autofocus=bool(self.settings.autofocus_device), reacquire=True)

    @property
    def steps(self) -> list[PlanStep]:
        return list(self._steps)

    @property
    def datasets(self) -> list[Path]:
        """NDTiff datasets written so far (a restarted acquisition writes a new one)."""
        root = self.settings.data_dir
        return sorted(p for p in root.glob(f"{self.settings.dataset_name}*") if p.is_dir()) if root.is_dir() else []

    def health(self) -> DriverHealth:
        if not self.session.connected:
            return DriverHealth(up=False, detail="not connected to Micro-Manager")
        return DriverHealth(up=True, detail=f"acquisition {self._acq_count}, hook errors {self._hook_errors}")

    def frames(self) -> Iterator[Frame]:
        if self._closed:
            raise DriverError("the Micro-Manager driver is closed")
        return self._run()

    def close(self) -> None:
        self._closed = True
        self._held = None
        self._finish_acquisition()

    def calibration_z_series(self, positions: int, offsets_um: tuple[float, ...]) -> list[ZPlanes]:
        """Z-series at the plan's first ``positions`` stage positions, around each one's z."""
        if not self.session.connected:
            self.session.connect()
        seen: dict[tuple, dict] = {}
        for step in self._steps:
            event = step.event
            xy = (event.get("x"), event.get("y"))
            seen.setdefault(xy, event)
        series = []
        for i, ((x, y), event) in enumerate(list(seen.items())[:positions]):
            centre = float(event.get("z") or 0.0)
            z = [centre + o for o in offsets_um]
            position = None if x is None else (float(x), float(y or 0.0))
            planes = tuple(self.session.call("calibration snap", _snap_at(position, zi)) for zi in z)
            series.append(ZPlanes(f"position{i}", tuple(z), planes))
        return series

    # -- StageControl ------------------------------------------------------------------

    def current_z(self) -> float:
        return float(self.session.call("read focus position", lambda core: core.get_position()))

    def move_z(self, z_um: float) -> None:
        self._stage_at_held("move_z")

        def move(core: Any) -> None:  # Any: pycromanager's Core is a dynamic bridge, untyped
            core.set_position(float(z_um))
            core.wait_for_device(core.get_focus_device())

        self.session.call("stage move", move)

    def snap(self) -> np.ndarray:
        self._stage_at_held("snap")
        return self.session.call("snap", _snap)

    def autofocus(self) -> float:
        self._stage_at_held("autofocus")
        device = self.settings.autofocus_device
        if not device:
            raise DriverError("no autofocus_device configured")

        def focus(core: Any) -> float:  # Any: as in move()
            core.set_auto_focus_device(device)
            core.full_focus()
            core.wait_for_device(core.get_focus_device())
            return float(core.get_position())

        return self.session.call("autofocus", focus)

    def reacquire(self, frame: Frame, retry: int) -> Frame:
        held = self._stage_at_held("reacquire")
        if frame.coords != held.frame.coords:
            raise DriverError(f"cannot re-acquire {frame.coords}: the runner holds {held.frame.coords}")
        event = held.step.retry_event(retry, self.current_z())
        key = axes_key(event["axes"])
        self._submit(event)
        image = self._inbox.take(key, self.settings.image_timeout_s)
        if image is None:
            self._recover(f"retry {retry} of {frame.coords.well} t{frame.coords.t}: no image within "
                          f"{self.settings.image_timeout_s} s")
            raise DriverError(f"the re-acquisition {event['axes']} delivered no image")
        new = self._frame(held.step, image, retry=retry, parent=frame)
        held.frame = new
        return new

    def bind_stop(self, stop: threading.Event) -> None:
        """``StopAware``: a SIGTERM wakes the wait for the next time point at once."""
        self._stop = stop

    # -- the plan ----------------------------------------------------------------------

    def _run(self) -> Iterator[Frame]:
        if not self.session.connected:
            self.session.connect()
        self._open_acquisition()
        self._last_plan_event = None
        self._started_at = self._clock.now()
        log.info("driver.plan_started", steps=len(self._steps), dataset=str(self._dataset_dir))
        submitted = 0
        try:
            for i, step in enumerate(self._steps):
                if submitted <= i and not self._wait_until_due(step):
                    log.info("driver.plan_stopped", at_step=i, steps=len(self._steps))
                    return
                while submitted < min(len(self._steps), i + 1 + self._lookahead) and (
                    submitted <= i or self._started_at + self._steps[submitted].due_s <= self._clock.now()
                ):
                    # Look ahead only to events already due: one waiting for its time point in
                    # the engine would hold up a re-focus of the frame in hand until then.
                    self._submit(self._plan_event(self._steps[submitted]))
                    submitted += 1
                wait = self.settings.image_timeout_s  # every event is submitted once it is due
                image = self._inbox.take(axes_key(step.axes), wait, self._stop)
                if image is None and self._stop.is_set():
                    log.info("driver.plan_stopped", at_step=i, steps=len(self._steps))
                    return
                if image is None:
                    self._recover(f"{step.coords.well} t{step.coords.t}: no image within {wait:.1f} s")
                    submitted = i + 1  # the aborted acquisition dropped the look-ahead; submit it again
                    frame = self._missing(step)
                else:
                    frame = self._frame(step, image, retry=0)
                self._held = _Held(step, frame)
                yield frame
                self._held = None
            log.info("driver.plan_finished", steps=len(self._steps), hook_errors=self._hook_errors)
        finally:
            self._held = None
            self._finish_acquisition()

    def _wait_until_due(self, step: PlanStep) -> bool:
        """Hold the step back until its time point is due; False on a stop.

        The engine is never handed an event before its time: given one, pycromanager's
        engine spins until the event's ``min_start_time`` even after an abort, and its
        threads keep the process from exiting until then (a whole time-lapse interval).
        """
        due = self._started_at + step.due_s
        while (left := due - self._clock.now()) > 0:
            if self._stop.wait(min(left, DUE_POLL_S)):
                return False
        return not self._stop.is_set()

    def _open_acquisition(self) -> None:
        from pycromanager import Acquisition

        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        self._acq_count += 1
        self._acq = Acquisition(
            directory=str(self.settings.data_dir),
            name=self.settings.dataset_name,
            image_process_fn=self._on_image,
        )
        dataset = self._acq.get_dataset()
        path = getattr(dataset, "path", None)  # getattr: only NDTiff datasets on disk have a path
        self._dataset_dir = Path(path) if path else None

    def _on_image(self, image: np.ndarray, metadata: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
        """pycromanager's image-processor thread. Never raises: pycromanager would swallow
        the exception and abort the acquisition silently."""
        try:
            axes = dict(metadata.get("Axes", {}))
            self._inbox.put(axes_key(axes), ArrivedImage(np.array(image, copy=True), dict(metadata), self._clock.now()))
        except Exception as exc:  # noqa: BLE001 - see docstring
            self._hook_errors += 1
            log.error("driver.hook_error", hook="image_process_fn", error=repr(exc))
        return image, metadata

    def _plan_event(self, step: PlanStep) -> dict[str, Any]:
        """The step's event, without stage coordinates the previous plan event already set.

        pycromanager's engine moves XY and Z for every event that carries them, even to
        where the stage already is (≈ 10 ms per event on the demo stage); a time-lapse at
        one field would pay that on every frame. Once refocusd has driven the stage (a
        re-focus, a retry) the next event carries them all again.
        """
        event, last = dict(step.event), self._last_plan_event
        self._last_plan_event = step.event
        if last is None:
            return event
        if event.get("x") == last.get("x") and event.get("y") == last.get("y"):
            event.pop("x", None)
            event.pop("y", None)
        if event.get("z") == last.get("z"):
            event.pop("z", None)
        return event

    def _submit(self, event: dict[str, Any]) -> None:
        self._inbox.expect(axes_key(event["axes"]))
        try:
            self._acq.acquire(event)
        except Exception as exc:  # noqa: BLE001 - a dead acquisition: the wait below times out and recovers
            log.error("driver.error", during="submit", axes=event["axes"], error=repr(exc))

    def _stage_at_held(self, what: str) -> _Held:
        held = self._held
        if held is None:
            raise DriverError(f"{what}() needs a frame in hand: call it between next() calls of frames()")
        if not held.stage_ready:
            # The look-ahead may have moved the stage on: let it finish, then come back.
            if not self._inbox.wait_idle(self.settings.image_timeout_s):
                self._recover("look-ahead images did not arrive")
            event = held.step.event

            def back(core: Any) -> None:  # Any: as in move()
                if "x" in event and "y" in event:
                    core.set_xy_position(event["x"], event["y"])
                    core.wait_for_device(core.get_xy_stage_device())
                if "z" in event:  # a re-focus starts from the z the frame was taken at
                    core.set_position(float(event["z"]))
                    core.wait_for_device(core.get_focus_device())

            self.session.call("stage move", back)
            held.stage_ready = True
            self._last_plan_event = None  # refocusd drives the stage now: the next event sets it all
        return held

    def _recover(self, why: str) -> None:
        """An image never came: log it, reach the core again if it is gone, start a fresh
        acquisition (the stuck one is aborted) so the rest of the plan still runs."""
        log.error("driver.error", during="acquire", error=why, acquisition=self._acq_count)
        try:
            self.session.call("health check", lambda core: core.get_camera_device())
        except DriverError:
            self.session.reconnect()
        old, self._acq = self._acq, None
        self._inbox.forget_expected()
        self._last_plan_event = None
        if old is not None:
            try:
                _abort(old)
            except Exception as exc:  # noqa: BLE001
                log.warning("driver.abort_failed", error=repr(exc))
            _join_quietly(old, FINISH_TIMEOUT_S)
        self._open_acquisition()
        log.warning("driver.acquisition_restarted", acquisition=self._acq_count, dataset=str(self._dataset_dir))

    def _finish_acquisition(self) -> None:
        acq, self._acq = self._acq, None
        if acq is None:
            return
        try:
            if self._stop.is_set():
                # Stopping: events still waiting in the engine for their time point (up to
                # an interval away) are dropped, not waited for.
                _abort(acq)
            else:
                acq.mark_finished()
        except Exception as exc:  # noqa: BLE001
            log.warning("driver.finish_failed", error=repr(exc))
        if self._stop.is_set():
            # The engine may sleep until a dropped event's time; the process is stopping, so
            # it is given a moment, not FINISH_TIMEOUT_S (systemd's stop timeout is 120 s).
            if not _join_quietly(acq, STOP_FINISH_TIMEOUT_S):
                log.warning("driver.acquisition_left_running", reason="stopping", waited_s=STOP_FINISH_TIMEOUT_S)
        elif not _join_quietly(acq, FINISH_TIMEOUT_S):
            log.error("driver.error", during="finish", error=f"acquisition did not finish within {FINISH_TIMEOUT_S} s")

    # -- frames ------------------------------------------------------------------------

    def _frame(self, step: PlanStep, image: ArrivedImage, *, retry: int, parent: Frame | None = None) -> Frame:
        axes = dict(image.metadata.get("Axes", step.axes))
        z = image.metadata.get("ZPosition_um_Intended", step.event.get("z") if retry == 0 else None)
        metadata: dict[str, Any] = {"axes": axes, "dataset": str(self._dataset_dir), "x_um": step.event.get("x"),
                                    "y_um": step.event.get("y")}
        if parent is not None:
            metadata["parent_source"] = parent.source.key
        return Frame(
            pixels=image.pixels,
            coords=step.coords,
            source=self._source(axes),
            acquired_at=image.arrived_at,
            scheduled_at=self._started_at + step.due_s,
            deadline=None if step.deadline_s is None else self._started_at + step.deadline_s,
            z_um=None if z is None else float(z),
            retry=retry,
            experiment=self._experiment,
            metadata=metadata,
            pixel_size_um=pixel_size.from_micromanager(image.metadata),
        )

    def _missing(self, step: PlanStep) -> Frame:
        return Frame(
            pixels=np.zeros((0, 0), np.uint16),
            coords=step.coords,
            source=self._source(step.axes),
            acquired_at=self._clock.now(),
            scheduled_at=self._started_at + step.due_s,
            deadline=None if step.deadline_s is None else self._started_at + step.deadline_s,
            experiment=self._experiment,
            metadata={"axes": step.axes, "error": "the camera returned no image"},
        )

    def _source(self, axes: dict[str, Any]) -> SourceRef:
        query = urlencode(sorted((k, v) for k, v in axes.items()))
        return SourceRef(uri=f"ndtiff://{self._dataset_dir}?{query}")


def _snap_at(xy: tuple[float, float] | None, z: float) -> Callable[[Any], np.ndarray]:
    # Any: pycromanager's Core is a dynamic proxy without type hints
    def snap(core: Any) -> np.ndarray:
        if xy is not None:
            core.set_xy_position(xy[0], xy[1])
            core.wait_for_device(core.get_xy_stage_device())
        core.set_position(float(z))
        core.wait_for_device(core.get_focus_device())
        return _snap(core)

    return snap


def _snap(core: Any) -> np.ndarray:  # Any: pycromanager's Core (untyped bridge)
    core.snap_image()
    pixels = np.asarray(core.get_image())
    return pixels.reshape(core.get_image_height(), core.get_image_width())


def _abort(acq: Any) -> None:  # Any: pycromanager's Acquisition
    """Drop the pending events and end the acquisition. ``abort`` alone leaves the Python
    backend's event thread (not a daemon) waiting for its end marker, so the process
    could never exit: ``mark_finished`` sends that marker."""
    acq.abort()
    acq.mark_finished()


def _join_quietly(acq: Any, timeout_s: float) -> bool:  # Any: pycromanager's Acquisition
    """``await_completion`` in a helper thread: a stuck engine must not hang refocusd."""
    done = threading.Event()

    def wait() -> None:
        try:
            acq.await_completion()
        except Exception as exc:  # noqa: BLE001 - an aborted acquisition re-raises its cause here
            log.warning("driver.acquisition_ended_with_error", error=repr(exc))
        finally:
            done.set()

    threading.Thread(target=wait, name="refocusd-mm-finish", daemon=True).start()
    return done.wait(timeout_s)


__all__ = ["MicroManagerRunDriver"]
