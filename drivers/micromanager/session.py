"""The connection to the Micro-Manager core: start or connect with back-off, retried calls.

Headless mode starts the C++ core in this process through pycromanager's Python backend
(no Java); bridge mode connects to a running Micro-Manager over its ZMQ bridge. The
pycromanager acquisition engine is a process-wide singleton bound to the first core, so a
headless core is started once per process and reused (a different configuration is loaded
into it) — stopping and restarting it would leave the engine with dead executors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import structlog

from refocusd.config.settings import MicroManagerSettings
from refocusd.drivers.base import DriverConfigError, DriverError

log = structlog.get_logger(__name__)

T = TypeVar("T")


class MicroManagerUnavailable(DriverError):
    """Micro-Manager could not be started or reached (after the configured retries)."""


class CoreCallFailed(DriverError):
    """A core call (snap, stage move, autofocus) kept failing after its retries."""


def backoff_delays(first_s: float, retries: int, cap_s: float = 30.0) -> list[float]:
    """Delays before each retry: first, 2·first, 4·first... capped."""
    return [min(cap_s, first_s * 2**i) for i in range(retries)]


def config_path(settings: MicroManagerSettings) -> Path | None:
    """The .cfg file: a bare file name is looked up in ``mm_dir`` (as Micro-Manager does)."""
    cfg = settings.config_file
    if cfg is None:
        return None
    if not cfg.is_absolute() and len(cfg.parts) == 1 and settings.mm_dir is not None:
        return settings.mm_dir / cfg
    return cfg


class CoreSession:
    """Owns the core handle; every hardware call goes through :meth:`call`."""

    def __init__(self, settings: MicroManagerSettings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._sleep = sleep
        self._core: Any = None  # Any: pycromanager's Core (untyped bridge)

    @property
    def core(self) -> Any:
        if self._core is None:
            raise MicroManagerUnavailable("not connected to Micro-Manager")
        return self._core

    @property
    def connected(self) -> bool:
        return self._core is not None

    def connect(self) -> Any:
        """Start/reach the core, retrying with back-off; raises :class:`MicroManagerUnavailable`."""
        s = self.settings
        delays = backoff_delays(s.connect_backoff_s, s.connect_retries)
        last: Exception | None = None
        for attempt in range(len(delays) + 1):
            try:
                self._core = self._open()
                self._apply_camera_properties()
                log.info("driver.connected", backend=s.backend, attempt=attempt + 1,
                         camera=self._core.get_camera_device())
                return self._core
            except DriverConfigError:
                raise  # a configuration mistake: retrying cannot fix it, and it is no outage
            except Exception as exc:  # noqa: BLE001 - pymmcore/pyjavaz raise plain RuntimeError/OSError
                self._core = None
                last = exc
                log.warning("driver.connect_failed", backend=s.backend, attempt=attempt + 1, error=str(exc))
                if attempt < len(delays):
                    self._sleep(delays[attempt])
        raise MicroManagerUnavailable(self._unreachable_message(last))

    def wrap(self, wrapper: Callable[[Any], Any]) -> None:
        """Replace the core handle by ``wrapper(core)`` (instrumentation, fault injection)."""
        self._core = wrapper(self.core)

    def reconnect(self) -> Any:
        log.warning("driver.reconnecting", backend=self.settings.backend)
        self._core = None
        return self.connect()

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """Run ``fn(core)``; core errors are retried with back-off, then :class:`CoreCallFailed`."""
        s = self.settings
        delays = backoff_delays(s.core_backoff_s, s.core_retries)
        for attempt in range(len(delays) + 1):
            try:
                return fn(self.core)
            except MicroManagerUnavailable:
                raise
            except Exception as exc:  # noqa: BLE001 - MMCore errors arrive as RuntimeError (CMMError)
                log.error("driver.error", during=what, attempt=attempt + 1, error=str(exc))
                if attempt == len(delays):
                    raise CoreCallFailed(f"{what} failed {attempt + 1} times: {exc}") from exc
                self._sleep(delays[attempt])
        raise AssertionError("unreachable")

    # -- opening -----------------------------------------------------------------------

    def _open(self) -> Any:
        if self.settings.backend == "bridge":
            from pycromanager import Core

            core = Core(port=self.settings.bridge_port, timeout=2000)
            core.get_version_info()  # fails fast when nothing listens on the port
            return core
        return _headless_core(self.settings)

    def _apply_camera_properties(self) -> None:
        core = self._core
        camera = core.get_camera_device()
        for name, value in self.settings.camera_properties.items():
            try:
                core.set_property(camera, name, value)
            except Exception as exc:  # noqa: BLE001 - MMCore reports a bad property or value as a plain error
                allowed = _allowed_values(core, camera, name)
                raise DriverConfigError(
                    f"driver.micromanager.camera_properties.{name}: camera {camera} refuses {value!r}"
                    + (f" (allowed: {', '.join(allowed)})" if allowed else "") + f": {exc}"
                ) from exc

    def _unreachable_message(self, last: Exception | None) -> str:
        s = self.settings
        tries = s.connect_retries + 1
        if s.backend == "bridge":
            where = f"the Micro-Manager bridge on port {s.bridge_port} (is Micro-Manager running with the server on?)"
        else:
            where = f"a headless core from {s.mm_dir} with {config_path(s)}"
        return f"Micro-Manager not reachable: could not start {where} after {tries} attempt(s): {last}"


_HEADLESS_CONFIG: dict[str, str] = {}


# Any: pycromanager's Core is a dynamic proxy without type hints
def _allowed_values(core: Any, device: str, name: str) -> list[str]:
    try:
        return [str(v) for v in core.get_allowed_property_values(device, name)]
    except Exception:  # noqa: BLE001 - no such property: no list to offer
        return []


def _headless_core(settings: MicroManagerSettings) -> Any:
    from mmpycorex import is_pymmcore_active
    from pycromanager import Core, start_headless

    mm_dir, cfg = settings.mm_dir, config_path(settings)
    if mm_dir is None or cfg is None:
        raise DriverConfigError("driver.micromanager: backend='headless' needs mm_dir and config_file")
    if not mm_dir.is_dir():
        raise DriverConfigError(f"driver.micromanager.mm_dir: Micro-Manager folder {mm_dir} does not exist")
    if not cfg.is_file():
        raise DriverConfigError(f"driver.micromanager.config_file: configuration file {cfg} does not exist")
    if not is_pymmcore_active():
        start_headless(str(mm_dir), str(cfg), python_backend=True)
        _HEADLESS_CONFIG["cfg"] = str(cfg)
        return Core()
    core = Core()
    if _HEADLESS_CONFIG.get("cfg") != str(cfg):
        core.set_device_adapter_search_paths([str(mm_dir)])
        core.load_system_configuration(str(cfg))
        _HEADLESS_CONFIG["cfg"] = str(cfg)
    return core


__all__ = ["CoreCallFailed", "CoreSession", "MicroManagerUnavailable", "backoff_delays", "config_path"]
