"""Frame sources and microscope control for refocusd.

The runner only sees the :class:`~refocusd.drivers.base.Microscope` protocol and the
:class:`~refocusd.drivers.base.Capabilities` a driver declares; it never checks driver types.
"""

from refocusd.drivers.base import (
    CalibrationSource,
    Capabilities,
    Coordinates,
    DriverConfigError,
    DriverError,
    DriverHealth,
    FocusStartPlanning,
    FocusStartProvider,
    Frame,
    FrameUnreadable,
    HealthReporting,
    Microscope,
    OutcomeAware,
    SourceRef,
    StageControl,
    StopAware,
    ZPlanes,
)
from refocusd.drivers.clock import Clock, SimulatedClock, SystemClock

__all__ = [
    "CalibrationSource",
    "Capabilities",
    "Clock",
    "Coordinates",
    "DriverConfigError",
    "DriverError",
    "DriverHealth",
    "FocusStartPlanning",
    "FocusStartProvider",
    "Frame",
    "FrameUnreadable",
    "HealthReporting",
    "Microscope",
    "OutcomeAware",
    "SimulatedClock",
    "SourceRef",
    "StageControl",
    "StopAware",
    "SystemClock",
    "ZPlanes",
]
