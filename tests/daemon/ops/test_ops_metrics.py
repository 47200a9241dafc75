"""The metrics registry and endpoint in-process (the scrape of a running daemon is in test_ops_daemon.py)."""

from __future__ import annotations

import math
import socket
import urllib.request

import numpy as np
import pytest

from refocusd.config.settings import MetricsSettings
from refocusd.daemon.ops.metrics import MeteredClassifier, MetricsServer, MetricsUnavailable, ServiceMetrics
from refocusd.models import Verdict


class ThresholdClassifier:
    """Mean brightness against a threshold: a deterministic stand-in for the SDCNN here."""

    model_id = "mean@test"
    threshold = 0.5

    def classify(self, pixels: np.ndarray, *, pixel_size_um: float | None = None) -> Verdict:
        p = float(pixels.mean())
        return Verdict(p, "focused" if p >= self.threshold else "defocused", self.model_id, latency_s=0.004)

    def classify_batch(self, frames, *, pixel_sizes=None):
        return [self.classify(f) for f in frames]


def value(metrics: ServiceMetrics, name: str, **labels) -> float:
    got = metrics.registry.get_sample_value(name, labels or None)
    assert got is not None, name
    return got


def test_outcomes_latency_and_refocus_ratio():
    metrics = ServiceMetrics()
    classifier = MeteredClassifier(ThresholdClassifier(), metrics)
    assert classifier.threshold == 0.5  # attributes of the real classifier pass through
    verdicts = classifier.classify_batch([np.full((4, 4), 0.9), np.full((4, 4), 0.1)]) + [
        classifier.classify(np.full((4, 4), 0.2))]
    assert [v.label for v in verdicts] == ["focused", "defocused", "defocused"]
    assert value(metrics, "refocusd_classification_seconds_count") == 3
    assert value(metrics, "refocusd_classification_seconds_bucket", le="0.005") == 3
    assert math.isnan(value(metrics, "refocusd_refocus_success_ratio"))
    metrics.observe_outcome("focused", "accepted", 0)
    metrics.observe_outcome("defocused", "reacquired", 1)
    metrics.observe_outcome("defocused", "reconstruction_queued", 2)
    metrics.observe_outcome(None, "quarantined", 0)
    assert value(metrics, "refocusd_frames_total", verdict="defocused", action="reacquired") == 1
    assert value(metrics, "refocusd_frames_total", verdict="unreadable", action="quarantined") == 1
    assert value(metrics, "refocusd_refocus_attempted_total") == 2
    assert value(metrics, "refocusd_refocus_success_ratio") == 0.5


def test_endpoint_is_off_on_port_0_and_a_taken_port_is_an_error():
    metrics = ServiceMetrics()
    assert MetricsServer(MetricsSettings(), metrics).start() is None  # default: off
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsUnavailable, match=f"127.0.0.1:{port}"):
            MetricsServer(MetricsSettings(port=port), metrics).start()
    server = MetricsServer(MetricsSettings(port=port), metrics)
    url = server.start()
    try:
        assert url == f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"refocusd_queue_depth" in response.read()
    finally:
        server.close()
