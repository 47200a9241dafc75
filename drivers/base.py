"""The contract between drivers and the runner: frames, coordinates, capabilities.

A driver yields :class:`Frame` objects; if it can drive the hardware it also implements
:class:`StageControl`. The policy reads :class:`Capabilities`, never the driver's type.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from refocusd.config.errors import ExitCode, RefocusdError


class DriverError(RefocusdError, RuntimeError):
    """The microscope or frame source failed (hardware error, lost connection)."""

    label = "microscope error"


class DriverConfigError(DriverError):
    """The driver's configuration is wrong (a user mistake, exit 2): the message names the key."""

    exit_code = ExitCode.USAGE
    label = "microscope configuration error"


class FrameUnreadable(DriverError):
    """A frame exists but cannot be used (truncated file, wrong shape, NaN pixels...).

    The runner quarantines the frame with ``reason`` and keeps going.
    """

    def __init__(self, reason: str, *, source: SourceRef | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source


@dataclass(frozen=True, slots=True)
class Coordinates:
    """Where and when a frame was taken. ``t`` is the time-point index."""

    plate: str = ""
    well: str = ""
    position: int = 0
    t: int = 0
    z_index: int = 0
    channel: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "plate": self.plate,
            "well": self.well,
            "position": self.position,
            "t": self.t,
            "z_index": self.z_index,
            "channel": self.channel,
        }


@dataclass(frozen=True, slots=True)
class SourceRef:
    """Where the pixels came from: a file (+ page/offset) or a driver-specific URI.

    ``version`` tells apart different contents at one URI (a watched file replaced with new
    data is a new source; the NIS driver uses the content hash).
    """

    uri: str
    page: int | None = None
    offset: int | None = None
    version: str | None = None

    @property
    def key(self) -> str:
        """Identity used by the ledger to refuse processing the same source twice."""
        # Page 0 is keyed like a file's only page: a stack still being written page by page
        # holds one page at first, and its first plane must keep one identity as it grows.
        suffix = f"#page={self.page}" if self.page else ""
        version = "" if self.version is None else f"@{self.version}"
        return f"{self.uri}{suffix}{version}"


@dataclass(frozen=True, slots=True)
class Frame:
    """One image and everything the policy needs to decide about it.

    ``deadline`` is the clock time by which a re-acquisition still counts for this
    time point (``None``: no deadline, e.g. a one-off plate scan). ``retry`` counts
    re-acquisitions (0 for the original frame). ``pixel_size_um`` is the sampling in
    µm per pixel (None where neither the source nor ``[models] pixel_size_um`` knows it).
    ``xy_um`` is the stage position where the driver knows it (the focus-surface memory
    learns from it).
    """

    pixels: np.ndarray
    coords: Coordinates
    source: SourceRef
    acquired_at: float
    scheduled_at: float | None = None
    deadline: float | None = None
    z_um: float | None = None
    retry: int = 0
    experiment: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    # µm per pixel in the sample plane, where the source knows it (or config sets it);
    # None: unknown, the classifier then works in native pixels.
    pixel_size_um: float | None = None
    xy_um: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a driver can do for the policy."""

    move_stage: bool = False
    autofocus: bool = False
    reacquire: bool = False

    @property
    def can_refocus(self) -> bool:
        return self.reacquire and (self.move_stage or self.autofocus)


@runtime_checkable
class Microscope(Protocol):
    """Anything that yields frames: a simulated microscope, Micro-Manager, a watched folder."""

    @property
    def capabilities(self) -> Capabilities: ...

    def frames(self) -> Iterator[Frame]:
        """Yield frames as they are acquired; returns when the plan is complete."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class StageControl(Protocol):
    """Hardware control at the position of the frame most recently yielded."""

    def current_z(self) -> float: ...

    def move_z(self, z_um: float) -> None:
        """Move the focus drive to absolute ``z_um`` (blocks until settled)."""
        ...

    def snap(self) -> np.ndarray:
        """Acquire pixels at the current stage position (used by focus sweeps)."""
        ...

    def autofocus(self) -> float:
        """Run the device's own autofocus; returns the new z. Raises DriverError."""
        ...

    def reacquire(self, frame: Frame, retry: int) -> Frame:
        """Acquire ``frame``'s position again at the current z, tagged with ``retry``."""
        ...


# (x_um, y_um, clock time) → the z a field's focusing should start from, or None.
FocusStartProvider = Callable[[float, float, float], "float | None"]


@runtime_checkable
class FocusStartPlanning(Protocol):
    """Optional plan hook: drivers that let refocusd choose the z each field's focusing
    starts from (the focus-surface memory's prediction)."""

    def plan_focus_start(self, provider: FocusStartProvider) -> None: ...


@dataclass(frozen=True, slots=True)
class ZPlanes:
    """A z-series snapped at one position for calibration (planes at increasing z)."""

    name: str
    z_um: tuple[float, ...]
    planes: tuple[np.ndarray, ...]
    pixel_size_um: float | None = None


@runtime_checkable
class CalibrationSource(Protocol):
    """Optional: drivers with stage control that can snap z-series at positions of their
    plan before it starts (``[models] calibrate = "on_start"``)."""

    def calibration_z_series(self, positions: int, offsets_um: tuple[float, ...]) -> list[ZPlanes]: ...


@dataclass(frozen=True, slots=True)
class DriverHealth:
    """A driver's own view of whether it works (device connected, watcher alive)."""

    up: bool
    detail: str = ""
    #: Not up *yet*: it begins on the runner's first frame request. Health judges it only after.
    starting: bool = False


@runtime_checkable
class HealthReporting(Protocol):
    """Optional: drivers that can tell they are down (status, metrics and logs read this)."""

    def health(self) -> DriverHealth: ...


@runtime_checkable
class StopAware(Protocol):
    """Optional: drivers whose ``frames()`` waits for data (a watched folder) are handed the
    service's stop event, so a SIGTERM ends their wait at once."""

    def bind_stop(self, stop: threading.Event) -> None: ...


@runtime_checkable
class OutcomeAware(Protocol):
    """Optional: drivers told what became of each frame they yielded (the NIS driver alerts
    the operator about defocused frames it cannot re-acquire)."""

    def observe_outcome(
        self, source_key: str, label: str | None, outcome: str, p_focused: float | None = None
    ) -> None: ...
