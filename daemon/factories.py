"""The one place that builds a service's parts from settings: the driver, the classifier
and the reconstruction backend. The service and the CLI (``classify``, ``reconstruct``)
both use these, so a calibration ``.json`` works wherever a classifier model does.

Each builder imports its heavy dependencies (TensorFlow, pycromanager, Dask) lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from refocusd.config import Settings
from refocusd.daemon.state.ledger import LEDGER_FILE
from refocusd.drivers import Clock, DriverError, Microscope
from refocusd.models import FocusClassifier, FrameReconstructor
from refocusd.models.focus_measure_classifier import is_focus_measure_spec, load_focus_measure_classifier
from refocusd.models.runtime import DevicePreference

# --------------------------------------------------------------------------- drivers


def build_simulated(settings: Settings, clock: Clock) -> Microscope:
    from refocusd.drivers.simulated import SimulatedMicroscope

    sim = settings.driver.simulated
    return SimulatedMicroscope(
        sim,
        settings.plate,
        settings.timelapse,
        clock=clock,
        data_dir=sim.data_dir,
        experiment=settings.service.experiment,
    )


def build_nis(settings: Settings, clock: Clock) -> Microscope:
    from refocusd.config.loader import writes_into_watched_folder
    from refocusd.drivers.nis import NisExportFolder, open_fingerprints

    nis = settings.driver.nis
    conflict = writes_into_watched_folder(settings)  # settings built in code skip the loader
    if conflict:
        raise DriverError(conflict)
    return NisExportFolder(
        nis,
        fingerprints=open_fingerprints(settings.service.state_dir / LEDGER_FILE),
        experiment=settings.service.experiment,
    )


def build_micromanager(settings: Settings, clock: Clock) -> Microscope:
    from refocusd.drivers.micromanager.factory import build

    return build(settings, clock)


# One factory per `driver.kind`; each imports its driver lazily (pycromanager, watchdog...).
DRIVER_FACTORIES: dict[str, Callable[[Settings, Clock], Microscope]] = {
    "simulated": build_simulated,
    "nis": build_nis,
    "micromanager": build_micromanager,
}


def build_driver(settings: Settings, clock: Clock) -> Microscope:
    return DRIVER_FACTORIES[settings.driver.kind](settings, clock)


# ------------------------------------------------------------------------- classifier


def build_classifier(
    spec: str | Path,
    *,
    device: DevicePreference = "auto",
    threshold: float = 0.5,
    mixed_precision: bool = False,
    crops: int | None = None,
) -> FocusClassifier:
    """A classifier from a model spec (``default``, a model folder or ``.keras`` file) or a
    focus-measure calibration written by ``refocusd calibrate`` (a ``.json`` file)."""
    if is_focus_measure_spec(str(spec)):
        return load_focus_measure_classifier(str(spec), threshold=threshold)
    from refocusd.models.runtime import load_classifier  # TensorFlow loads here

    return load_classifier(spec, device=device, threshold=threshold, mixed_precision=mixed_precision, crops=crops)


# ------------------------------------------------------------------------ reconstructor


@dataclass
class Backend:
    """How jobs get a reconstructor: ``reconstructor()`` loads it on first use (a local
    model loads lazily, a Dask cluster is connected already); ``threads`` run at once."""

    load: Callable[[], FrameReconstructor]
    threads: int
    _loaded: list[FrameReconstructor] = field(default_factory=list)

    def reconstructor(self) -> FrameReconstructor:
        if not self._loaded:
            self._loaded.append(self.load())
        return self._loaded[0]

    def close(self) -> None:
        for loaded in self._loaded:
            loaded.close()
        self._loaded.clear()


def build_backend(settings: Settings) -> Backend:
    """The configured backend (``[reconstruction] backend``): local TensorFlow or Dask.

    A Dask cluster is connected now: an unreachable cluster is a start-up error, not N
    failed jobs hours later.
    """
    r, m = settings.reconstruction, settings.models
    if r.backend == "dask":
        remote = connect_dask(r.dask_scheduler or "", m.reconstructor, device=m.device)
        return Backend(load=lambda: remote, threads=r.workers or remote.threads, _loaded=[remote])
    return Backend(
        load=lambda: load_local_reconstructor(m.reconstructor, device=m.device, mixed_precision=m.mixed_precision),
        threads=r.workers or 1,
    )


def load_local_reconstructor(
    spec: str | Path, *, device: DevicePreference = "auto", mixed_precision: bool = False
) -> FrameReconstructor:
    from refocusd.models.runtime import load_reconstructor  # TensorFlow loads here

    return load_reconstructor(spec, device=device, mixed_precision=mixed_precision)


def connect_dask(address: str, spec: str | Path, *, device: DevicePreference = "auto") -> FrameReconstructor:
    from refocusd.daemon.output.dask_backend import DaskReconstructor

    return DaskReconstructor.connect(address, spec, device=device)
