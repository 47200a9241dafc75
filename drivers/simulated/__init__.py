"""The embedded default driver: a simulated automated microscope.

A plate with wells and fields (:mod:`.plate`), an XYZ stage over a tilted, drifting focal
surface with a device autofocus that now and then misses (:mod:`.stage`), and a camera that
renders the field at the true defocus with the optics simulator (:mod:`.camera`), put
together as a :class:`~refocusd.drivers.base.Microscope` with ``StageControl``
(:mod:`.microscope`).
"""

from refocusd.drivers.simulated.microscope import SimulatedMicroscope
from refocusd.drivers.simulated.plate import PlatePosition

__all__ = ["PlatePosition", "SimulatedMicroscope"]
