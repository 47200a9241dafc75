"""Prometheus metrics (prometheus-client) and the HTTP endpoint that serves them.

One :class:`CollectorRegistry` per service (not the global one), so tests and several
services in one process do not collide. The endpoint binds to ``[metrics] bind``
(127.0.0.1 by default) and is off when ``[metrics] port`` is 0.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from refocusd.config.errors import RefocusdError
from refocusd.config.settings import MetricsSettings
from refocusd.daemon.vocabulary import Outcome
from refocusd.models import FocusClassifier, FrameReconstructor, Verdict
from refocusd.models.api import DeviceInfo

log = structlog.get_logger("refocusd.metrics")

_LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_RECONSTRUCTION_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class ServiceMetrics:
    """Every metric refocusd exports, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.frames = Counter(
            "refocusd_frames", "Original frames by classifier verdict and final action.",
            ["verdict", "action"], registry=r,
        )
        self.classification_seconds = Histogram(
            "refocusd_classification_seconds", "Classifier latency per frame (preprocessing included).",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.refocus_attempted = Counter(
            "refocusd_refocus_attempted", "Frames for which a re-focus + re-acquisition was tried.", registry=r
        )
        self.refocus_succeeded = Counter(
            "refocusd_refocus_succeeded", "Of those, frames saved by the re-acquisition.", registry=r
        )
        self.refocus_success_ratio = Gauge(
            "refocusd_refocus_success_ratio", "refocus_succeeded / refocus_attempted since start (NaN before any).",
            registry=r,
        )
        self.refocus_success_ratio.set(float("nan"))
        self._attempted = 0
        self._succeeded = 0
        self.queue_depth = Gauge("refocusd_queue_depth", "Reconstruction jobs queued or running.", registry=r)
        self.reconstruction_seconds = Histogram(
            "refocusd_reconstruction_seconds", "ResUNet reconstruction time per frame.",
            buckets=_RECONSTRUCTION_BUCKETS, registry=r,
        )
        self.up = Gauge("refocusd_up", "1 when the component works: driver (incl. its watcher), worker.",
                        ["component"], registry=r)
        self.device = Gauge("refocusd_inference_device", "1 for the device running inference.",
                            ["device", "name"], registry=r)
        self.disk_free_bytes = Gauge("refocusd_output_disk_free_bytes", "Free space on the output root.",
                                     registry=r)
        self.last_frame = Gauge("refocusd_last_frame_timestamp_seconds", "Unix time of the last frame processed.",
                                registry=r)

    def observe_outcome(self, label: str | None, outcome: str, attempts: int) -> None:
        self.frames.labels(verdict=label or "unreadable", action=outcome).inc()
        self.last_frame.set(time.time())
        if attempts > 0:  # called from the runner thread only
            self._attempted += 1
            self.refocus_attempted.inc()
            if outcome == Outcome.REACQUIRED:
                self._succeeded += 1
                self.refocus_succeeded.inc()
            self.refocus_success_ratio.set(self._succeeded / self._attempted)

    def set_device(self, kind: str, name: str) -> None:
        self.device.clear()
        self.device.labels(device=kind, name=name).set(1)


class MeteredClassifier:
    """The runner's classifier, timing every verdict into the latency histogram."""

    def __init__(self, inner: FocusClassifier, metrics: ServiceMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        verdict = self._inner.classify(pixels, pixel_size_um=pixel_size_um)
        self._metrics.classification_seconds.observe(verdict.latency_s)
        return verdict

    def classify_batch(
        self, frames: Sequence[np.ndarray], *, pixel_sizes: Sequence[float | None] | None = None
    ) -> list[Verdict]:
        verdicts = self._inner.classify_batch(frames, pixel_sizes=pixel_sizes)
        for verdict in verdicts:
            self._metrics.classification_seconds.observe(verdict.latency_s)
        return verdicts

    @property
    def device(self) -> DeviceInfo:
        return self._inner.device

    @property
    def threshold(self) -> float:
        return self._inner.threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self._inner.threshold = value


class MeteredReconstructor:
    """The worker's reconstructor, timing every reconstruction."""

    def __init__(self, inner: FrameReconstructor, metrics: ServiceMetrics) -> None:
        self._inner = inner
        self._metrics = metrics

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    @property
    def provenance(self) -> dict[str, object]:
        return self._inner.provenance

    @property
    def threads(self) -> int:
        return self._inner.threads

    def parameters_for(self, height: int, width: int) -> dict[str, object]:
        return self._inner.parameters_for(height, width)

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        with self._metrics.reconstruction_seconds.time():
            return self._inner.reconstruct(pixels)

    def close(self) -> None:
        self._inner.close()


class MetricsUnavailable(RefocusdError, RuntimeError):
    """The metrics endpoint cannot listen where it was told to (port taken, bad address)."""


class MetricsServer:
    """The ``/metrics`` HTTP endpoint (prometheus-client's WSGI server in a daemon thread)."""

    def __init__(self, settings: MetricsSettings, metrics: ServiceMetrics) -> None:
        self._settings = settings
        self._metrics = metrics
        self._server: Any = None  # Any: prometheus-client's WSGI server object is untyped
        self.url: str | None = None

    def start(self) -> str | None:
        s = self._settings
        if s.port == 0:
            log.info("metrics.disabled", reason="[metrics] port is 0")
            return None
        try:
            self._server, _thread = start_http_server(s.port, addr=s.bind, registry=self._metrics.registry)
        except OSError as exc:  # a wrong port must stop the start, not go unnoticed
            raise MetricsUnavailable(f"metrics endpoint cannot listen on {s.bind}:{s.port}: {exc}") from exc
        host = f"[{s.bind}]" if ":" in s.bind else s.bind
        self.url = f"http://{host}:{s.port}/metrics"
        log.info("metrics.listening", url=self.url)
        return self.url

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
