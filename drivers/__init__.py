"""Frame sources and microscope control for refocusd.

The runner only sees the :class:`~refocusd.drivers.base.Microscope` protocol and the
:class:`~refocusd.drivers.base.Capabilities` a driver declares; it never checks driver types.
"""

from refocusd.drivers.base import (
    Capabilities,
    Coordinates,
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
)
from refocusd.drivers.clock import Clock, SimulatedClock, SystemClock

__all__ = [
    "Capabilities",
    "Clock",
    "Coordinates",
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
]
