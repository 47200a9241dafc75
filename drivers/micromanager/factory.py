"""Build the Micro-Manager driver for ``[driver] kind = "micromanager"``."""

from __future__ import annotations

from refocusd.config import Settings
from refocusd.drivers.base import Microscope
from refocusd.drivers.clock import Clock


def build(settings: Settings, clock: Clock) -> Microscope:
    mm = settings.driver.micromanager
    assert mm is not None  # DriverSettings validates that the section exists for this kind
    if mm.mode == "follow":
        from refocusd.drivers.micromanager.follow import NDTiffFollower

        return NDTiffFollower(mm, clock=clock, experiment=settings.service.experiment, plate=settings.plate.name)
    from refocusd.drivers.micromanager.run_driver import MicroManagerRunDriver

    driver = MicroManagerRunDriver(
        mm, settings.timelapse, clock=clock, experiment=settings.service.experiment, plate=settings.plate.name,
        lookahead=mm.lookahead,
    )
    driver.session.connect()  # at start: an unreachable Micro-Manager is a clear error now, not mid-plan
    return driver
