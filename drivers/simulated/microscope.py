"""The embedded default driver: a simulated automated microscope.

A plate scan / time-lapse plan (``PlateSettings`` × ``TimelapseSettings``) run on a stage
that takes time to move, a focal surface with tilt and drift, a device autofocus that now
and then misses, and a camera that renders the specimen at the true defocus. Raw frames are
written as TIFFs under ``data_dir`` the way a real acquisition writes its data:

    data_dir/[<experiment>/]<plate>/<well>/p<pos>/t<tttt>_r<retry>.tif

Each time point starts at ``start + t·interval_s``; within a pass every field is due at
its nominal offset (the moves, autofocus and exposures before it), which is the frame's
``scheduled_at``; its ``deadline`` is ``min(scheduled_at + max_delay_s, the same field's
next time point)`` for a time-lapse, None for a single plate scan.

``frames()`` is a synchronous generator. While the consumer holds the frame just yielded
(between two ``next()`` calls) it may drive the stage at that frame's field through the
:class:`~refocusd.drivers.base.StageControl` methods.

Restarting on the same ``data_dir`` resumes: the plan's start time is kept in
``acquisition.json``, and a frame whose file already exists is yielded from that file
(raw data is never overwritten), so a consumer that records sources can skip what it has
already processed.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import structlog
import tifffile

from refocusd.config.files import atomic_path, atomic_write
from refocusd.config.settings import PlateSettings, SimulatedMicroscopeSettings, TimelapseSettings
from refocusd.drivers.base import (
    Capabilities,
    Coordinates,
    DriverError,
    FocusStartProvider,
    Frame,
    SourceRef,
    ZPlanes,
)
from refocusd.drivers.clock import Clock
from refocusd.drivers.simulated.camera import DEFAULT_RENDER_CACHE_BYTES, SimulatedCamera
from refocusd.config.wells import parse_well
from refocusd.drivers.simulated.plate import PlatePosition, plate_positions
from refocusd.drivers.simulated.stage import DeviceAutofocus, FocalSurface, Stage

log = structlog.get_logger(__name__)

CHANNEL = "phase"
_CALIBRATION_DRAW = 1_000_000  # seed-key tag of calibration snaps and autofocus calls
PLAN_FILE = "acquisition.json"
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _safe_component(name: str) -> str:
    cleaned = _SAFE.sub("_", name).strip("._")
    return cleaned or "_"


@dataclasses.dataclass(slots=True)
class _Held:
    """The field whose frame the consumer holds, and what has been done there."""

    site: PlatePosition
    key: tuple[int, int, int]  # (row, column, position index): seeds and cache keys
    t: int
    frame: Frame
    autofocus_calls: int = 1
    snaps: int = 1


class SimulatedMicroscope:
    """Implements :class:`~refocusd.drivers.base.Microscope` and ``StageControl``."""

    def __init__(
        self,
        settings: SimulatedMicroscopeSettings,
        plate: PlateSettings,
        timelapse: TimelapseSettings,
        *,
        clock: Clock,
        data_dir: Path | None = None,
        experiment: str = "",
        render_cache_bytes: int = DEFAULT_RENDER_CACHE_BYTES,
        defocus_quantum_um: float | None = None,
    ) -> None:
        """``data_dir`` defaults to ``settings.data_dir``; the last two tune the camera's
        render cache (see :class:`~refocusd.drivers.simulated.camera.SimulatedCamera`)."""
        self.settings = settings
        self.plate = plate
        self.timelapse = timelapse
        self.experiment = experiment
        self._clock = clock
        self.save_raw = settings.save_raw
        self.camera = SimulatedCamera(
            settings, clock=clock, render_cache_bytes=render_cache_bytes, defocus_quantum_um=defocus_quantum_um
        )
        self.sites: list[PlatePosition] = plate_positions(plate, self.camera.field_of_view_um)
        self.surface = FocalSurface.from_settings(settings)
        self.stage = Stage.from_settings(clock, settings)
        self.autofocus_device = DeviceAutofocus(
            self.stage,
            self.surface,
            clock,
            seed=settings.seed,
            miss_rate=settings.autofocus_miss_rate,
            miss_um=settings.autofocus_miss_um,
            exposure_s=settings.exposure_s,
            capture_um=settings.autofocus_capture_um,
        )
        self.data_dir = Path(data_dir if data_dir is not None else settings.data_dir)
        self.schedule_offsets_s = self._nominal_offsets()
        root = self.data_dir
        if experiment:
            root = root / _safe_component(experiment)
        self.root = root / _safe_component(plate.name)
        self._started_at: float | None = None
        self._held: _Held | None = None
        self._focus_start: FocusStartProvider | None = None
        self._running = False
        self._closed = False

    # -- Microscope --------------------------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(move_stage=True, autofocus=True, reacquire=True)

    @property
    def frame_count(self) -> int:
        """Frames the plan yields (re-acquisitions not counted)."""
        return len(self.sites) * self.timelapse.timepoints

    def frames(self) -> Iterator[Frame]:
        self._check_open()
        if self._running:
            raise DriverError("frames() is already running on this microscope")
        return self._run()

    def calibration_z_series(self, positions: int, offsets_um: tuple[float, ...]) -> list[ZPlanes]:
        """Z-series at ``positions`` fields spread over the plan, around where the device
        autofocus lands (it may miss: such a series has no peak and calibration skips it).
        Takes microscope time; writes nothing; the plan's autofocus draws are untouched."""
        self._check_open()
        if self._running:
            raise DriverError("calibration z-series are taken before the plan starts")
        picks = sorted({round(i) for i in np.linspace(0, len(self.sites) - 1, max(1, positions))})
        series = []
        for n, index in enumerate(picks):
            site = self.sites[index]
            row, col = parse_well(site.well)
            key = (row, col, site.position_index)
            self.stage.move_xy(site.x_um, site.y_um)
            landed = self.autofocus_device.run(0.0, (*key, _CALIBRATION_DRAW, 1)).z_um
            planes, zs = [], []
            for j, offset in enumerate(offsets_um):
                self.stage.move_z(landed + offset)
                focus = self.surface.z_um(self.stage.x_um, self.stage.y_um, 0.0)
                planes.append(self.camera.snap(key, self.stage.z_um - focus, noise_key=(_CALIBRATION_DRAW + n, j)))
                zs.append(self.stage.z_um)
            series.append(ZPlanes(f"{site.well}-p{site.position_index}", tuple(zs), tuple(planes),
                                  self.camera.pixel_size_um))
        return series

    def plan_focus_start(self, provider: FocusStartProvider) -> None:
        """Plan hook: before each field's autofocus the focus drive goes to ``provider``'s z."""
        self._focus_start = provider

    def close(self) -> None:
        self._held = None
        self._closed = True
        self.camera.close()

    # -- StageControl (at the field of the frame most recently yielded) ------------------

    def current_z(self) -> float:
        return self.stage.z_um

    def move_z(self, z_um: float) -> None:
        self._require_held("move_z")
        self.stage.move_z(z_um)

    def snap(self) -> np.ndarray:
        held = self._require_held("snap")
        held.snaps += 1
        return self.camera.snap(held.key, self._true_defocus(), noise_key=(held.t, held.snaps))

    def autofocus(self) -> float:
        held = self._require_held("autofocus")
        held.autofocus_calls += 1
        result = self.autofocus_device.run(self._plan_time(), (*held.key, held.t, held.autofocus_calls))
        log.debug(
            "simulator.autofocus", well=held.site.well, position=held.site.position_index, t=held.t,
            z_um=result.z_um, missed=result.missed,
        )
        return result.z_um

    def reacquire(self, frame: Frame, retry: int) -> Frame:
        held = self._require_held("reacquire")
        if frame.coords != held.frame.coords:
            raise DriverError(
                f"cannot re-acquire {frame.coords.well} p{frame.coords.position} t{frame.coords.t}: "
                f"the stage is at {held.frame.coords.well} p{held.frame.coords.position} t{held.t}"
            )
        if retry < 1:
            raise DriverError(f"re-acquisition retry must be ≥ 1, got {retry}")
        path = self._path(held.site, held.t, retry)
        if self.save_raw and path.exists():
            if path != Path(frame.source.uri):
                held.frame = self._resume_frame(path, frame.scheduled_at, frame.deadline)
                return held.frame
            raise DriverError(f"re-acquisition {retry} would overwrite its own source {path}")
        held.snaps += 1
        defocus = self._true_defocus()
        pixels = self.camera.snap(held.key, defocus, noise_key=(held.t, held.snaps))
        now = self._clock.now()
        metadata = {**frame.metadata, **self._truth(defocus), "parent_source": frame.source.uri}
        new = dataclasses.replace(
            frame,
            pixels=pixels,
            source=self._source(path),
            acquired_at=now,
            z_um=self.stage.z_um,
            retry=retry,
            metadata=metadata,
        )
        self._save(path, new, held.site)
        held.frame = new
        return new

    # -- the plan ----------------------------------------------------------------------

    def _run(self) -> Iterator[Frame]:
        self._running = True
        try:
            start = self._open_plan()
            interval = self.timelapse.interval_s
            timepoints = self.timelapse.timepoints
            log.info(
                "simulator.started", root=str(self.root), fields=len(self.sites), timepoints=timepoints,
                frame_shape=list(self.settings.frame_shape), seed=self.settings.seed,
            )
            for t in range(timepoints):
                point = start + t * interval
                early = point - self._clock.now()
                if early > 0:
                    # One sleep, no loop: a woken SystemClock means "stop soon", not "spin".
                    self._clock.sleep(early)
                for site, offset in zip(self.sites, self.schedule_offsets_s, strict=True):
                    self._check_open()
                    scheduled = point + offset
                    frame = self._acquire(site, t, scheduled, self._deadline(scheduled, t))
                    yield frame
                    self._held = None
                if t + 1 < timepoints and self.sites:
                    # Park at the first field while waiting for the next point, as plate
                    # scanners do: its schedule starts there, not at the last field's well.
                    self.stage.move_xy(self.sites[0].x_um, self.sites[0].y_um)
            log.info("simulator.finished", root=str(self.root), frames=self.frame_count)
        finally:
            self._held = None
            self._running = False

    def _acquire(self, site: PlatePosition, t: int, scheduled: float, deadline: float | None) -> Frame:
        row, col = parse_well(site.well)
        key = (row, col, site.position_index)
        path = self._path(site, t, 0)
        if self.save_raw and path.exists():
            frame = self._resume_frame(path, scheduled, deadline)
            self.stage.move_xy(site.x_um, site.y_um)
            if frame.z_um is not None:
                self.stage.move_z(frame.z_um)
            self._held = _Held(site, key, t, frame)
            return frame
        self.stage.move_xy(site.x_um, site.y_um)
        self._move_to_planned_start(site)
        af = self.autofocus_device.run(self._plan_time(), (*key, t, 1))
        defocus = self._true_defocus()
        pixels = self.camera.snap(key, defocus, noise_key=(t, 1))
        frame = Frame(
            pixels=pixels,
            coords=Coordinates(
                plate=self.plate.name, well=site.well, position=site.position_index, t=t, channel=CHANNEL
            ),
            source=self._source(path),
            acquired_at=self._clock.now(),
            scheduled_at=scheduled,
            deadline=deadline,
            z_um=self.stage.z_um,
            retry=0,
            experiment=self.experiment,
            xy_um=(site.x_um, site.y_um),
            pixel_size_um=self.camera.pixel_size_um,
            metadata={
                **self._truth(defocus),
                "autofocus_missed": af.missed,
                "culture": self.camera.specimen_info(key),
            },
        )
        self._save(path, frame, site)
        self._held = _Held(site, key, t, frame)
        return frame

    def _move_to_planned_start(self, site: PlatePosition) -> None:
        if self._focus_start is None:
            return
        z = self._focus_start(site.x_um, site.y_um, self._clock.now())
        lo, hi = self.stage.z_range_um
        if z is not None and lo <= z <= hi:
            self.stage.move_z(z)

    def _nominal_offsets(self) -> list[float]:
        """When each field is due within a pass, relative to the time point's start.

        A pass visits the fields one after another (move, autofocus, exposure), so the
        last field of a 96-well plate is due a minute or more after the first; its deadline
        counts from then. Time spent re-focusing makes the rest of the pass run late.
        """
        # The autofocus scan, its settling move onto the focus it found, the exposure.
        per_field = self.autofocus_device.scan_s + self.settings.settle_s + self.settings.exposure_s
        speed, settle = self.settings.xy_speed_um_per_s, self.settings.settle_s
        offsets, due = [], 0.0
        for i, site in enumerate(self.sites):
            if i:
                prev = self.sites[i - 1]
                distance = max(abs(site.x_um - prev.x_um), abs(site.y_um - prev.y_um))
                due += per_field + (distance / speed + settle if distance else 0.0)
            offsets.append(due)
        return offsets

    def _deadline(self, scheduled: float, t: int) -> float | None:
        if self.timelapse.timepoints <= 1:
            return None
        deadline = scheduled + self.timelapse.max_delay_s
        if t + 1 < self.timelapse.timepoints:
            deadline = min(deadline, scheduled + self.timelapse.interval_s)
        return deadline

    def _plan_time(self) -> float:
        return self._clock.now() - (self._started_at or 0.0)

    def _true_focus(self) -> float:
        return self.surface.z_um(self.stage.x_um, self.stage.y_um, self._plan_time())

    def _true_defocus(self) -> float:
        return self.stage.z_um - self._true_focus()

    def _truth(self, defocus: float) -> dict[str, Any]:
        return {"true_defocus_um": round(defocus, 4), "true_focus_z_um": round(self.stage.z_um - defocus, 4)}

    def _require_held(self, what: str) -> _Held:
        self._check_open()
        if self._held is None:
            raise DriverError(f"{what}() needs a frame in hand: call it between next() calls of frames()")
        return self._held

    def _check_open(self) -> None:
        if self._closed:
            raise DriverError("the simulated microscope is closed")

    # -- on disk -----------------------------------------------------------------------

    def _plan_record(self) -> dict[str, Any]:
        return {
            "driver": "simulated",
            "experiment": self.experiment,
            "plate": self.plate.model_dump(mode="json"),
            "timelapse": self.timelapse.model_dump(mode="json"),
            "seed": self.settings.seed,
            "frame_shape": list(self.settings.frame_shape),
            "objective": self.settings.objective,
        }

    def _open_plan(self) -> float:
        """Start a plan, or resume the one already recorded under ``root``."""
        plan_path = self.root / PLAN_FILE
        record = self._plan_record()
        if not self.save_raw:
            self._started_at = self._clock.now()  # nothing on disk, nothing to resume
        elif plan_path.exists():
            try:
                stored = json.loads(plan_path.read_text())
            except (OSError, ValueError) as exc:
                raise DriverError(f"cannot read the acquisition record {plan_path}: {exc}") from exc
            differing = sorted(k for k in record if stored.get(k) != record[k])
            if differing:
                raise DriverError(
                    f"{self.root} holds a different acquisition (differs in {', '.join(differing)}); "
                    "use another data_dir, plate name or experiment"
                )
            self._started_at = float(stored["started_at"])
            log.info("simulator.resumed", root=str(self.root), started_at=self._started_at)
        else:
            self._started_at = self._clock.now()
            self.root.mkdir(parents=True, exist_ok=True)
            _write_atomic_text(plan_path, json.dumps({**record, "started_at": self._started_at}, indent=2))
        return self._started_at

    def _path(self, site: PlatePosition, t: int, retry: int) -> Path:
        return self.root / site.well / f"p{site.position_index:03d}" / f"t{t:04d}_r{retry}.tif"

    def _source(self, path: Path) -> SourceRef:
        """The file, or with ``save_raw`` off the same identity under a ``sim://`` URI."""
        if self.save_raw:
            return SourceRef(uri=str(path))
        return SourceRef(uri="sim://" + path.relative_to(self.data_dir).as_posix())

    def _save(self, path: Path, frame: Frame, site: PlatePosition) -> None:
        if not self.save_raw:
            return
        description = {
            "refocusd_simulated": 1,
            **frame.coords.as_dict(),
            "retry": frame.retry,
            "experiment": frame.experiment,
            "x_um": site.x_um,
            "y_um": site.y_um,
            "z_um": frame.z_um,
            "acquired_at": frame.acquired_at,
            "scheduled_at": frame.scheduled_at,
            "deadline": frame.deadline,
            "seed": self.settings.seed,
            "objective": self.settings.objective,
            "pixel_size_um": self.camera.pixel_size_um,
            "metadata": dict(frame.metadata),
        }
        res = 1e4 / self.camera.pixel_size_um  # pixels per centimetre
        try:
            with atomic_path(path) as tmp:
                tifffile.imwrite(
                    tmp, frame.pixels, description=json.dumps(description), metadata=None,
                    resolution=(res, res), resolutionunit="CENTIMETER",
                )
        except OSError as exc:
            raise DriverError(f"cannot write raw frame {path}: {exc}") from exc

    def _resume_frame(self, path: Path, scheduled: float | None, deadline: float | None) -> Frame:
        """A frame acquired by an earlier run: its file is the record; never overwrite it."""
        try:
            with tifffile.TiffFile(path) as tif:
                pixels = tif.pages[0].asarray()
                info = json.loads(tif.pages[0].description)
        except (OSError, ValueError, KeyError, tifffile.TiffFileError) as exc:
            raise DriverError(f"raw frame {path} from an earlier run is unreadable: {exc}") from exc
        acquired_at = float(info["acquired_at"])
        if self._clock.now() < acquired_at:
            self._clock.sleep(acquired_at - self._clock.now())  # time moves on to the record's
        log.debug("simulator.frame_resumed", source=str(path))
        return Frame(
            pixels=pixels,
            coords=Coordinates(
                plate=info["plate"], well=info["well"], position=info["position"], t=info["t"],
                z_index=info.get("z_index", 0), channel=info["channel"],
            ),
            source=SourceRef(uri=str(path)),
            acquired_at=acquired_at,
            scheduled_at=scheduled,
            deadline=deadline,
            z_um=info["z_um"],
            retry=info["retry"],
            experiment=info["experiment"],
            xy_um=(info["x_um"], info["y_um"]) if "x_um" in info else None,
            pixel_size_um=info.get("pixel_size_um"),
            metadata={**info["metadata"], "resumed": True},
        )


def _write_atomic_text(path: Path, text: str) -> None:
    atomic_write(path, text)


__all__ = ["CHANNEL", "PLAN_FILE", "SimulatedMicroscope"]
