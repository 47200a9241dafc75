"""One real `refocusd run` daemon, watched the way systemd, Prometheus and a lab manager do.

The daemon runs the simulated microscope in real time (a time-lapse of 1-s points), with
NOTIFY_SOCKET pointing at a real AF_UNIX datagram socket owned by this test (standing in for
systemd) and WATCHDOG_USEC set; the metrics endpoint is scraped over HTTP; SIGHUP is sent
with a good and a bad configuration. The tests share the daemon (TensorFlow start-up costs
seconds) and run in file order; the last one stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_text(port: int, *, level: str = "info", min_free_gb: float = 0.0) -> str:
    return f"""
[service]
experiment = "ops-test"
state_dir = "state"
output_root = "out"
[driver.simulated]
seed = 5
data_dir = "data"
frame_shape = [256, 256]
realtime = true
autofocus_miss_rate = 0.3
[plate]
wells = ["A1", "B2"]
[timelapse]
timepoints = 400
interval_s = 1.0
max_delay_s = 0.3
[models]
device = "cpu"
[logging]
level = "{level}"
format = "json"
file = "logs/refocusd.jsonl"
[metrics]
port = {port}
[health]
interval_s = 0.5
min_free_gb = {min_free_gb}
"""


class NotifySocket:
    """What systemd does with NOTIFY_SOCKET: a datagram socket collecting sd_notify messages."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="rfd-")  # AF_UNIX paths must stay short
        self.path = os.path.join(self.dir, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages: list[dict[str, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            self.messages.append(fields)

    def wait_for(self, key: str, timeout: float = 120, after: int = 0) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in self.messages[after:]:
                if key in message:
                    return message
            time.sleep(0.05)
        raise AssertionError(f"no {key} message in {timeout} s; got {self.messages}")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class Daemon:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.config = root / "refocusd.toml"
        self.config.write_text(config_text(self.port))
        self.notify = NotifySocket()
        env = {**os.environ, "NOTIFY_SOCKET": self.notify.path, "WATCHDOG_USEC": "1000000"}
        env.pop("WATCHDOG_PID", None)
        self.stderr = open(root / "stderr.log", "w")  # noqa: SIM115 - a file, so a full pipe cannot block it
        self.proc = subprocess.Popen(
            [*REFOCUSD, "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env,
        )

    @property
    def log(self) -> Path:
        return self.root / "logs" / "refocusd.jsonl"

    def events(self, name: str) -> list[dict]:
        if not self.log.exists():
            return []
        records = [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]
        return [r for r in records if r.get("event") == name]

    def wait_event(self, name: str, count: int = 1, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.events(name)
            if len(found) >= count:
                return found
            self.assert_alive()
            time.sleep(0.1)
        raise AssertionError(f"fewer than {count} {name} events after {timeout} s")

    def assert_alive(self) -> None:
        code = self.proc.poll()
        assert code is None, f"daemon exited with {code}: {(self.root / 'stderr.log').read_text()[-3000:]}"

    def scrape(self) -> dict[str, list]:
        self.assert_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return {f.name: f.samples for f in text_string_to_metric_families(text)}

    def status(self, *extra: str) -> subprocess.CompletedProcess:
        return subprocess.run([*REFOCUSD, "status", "--config", str(self.config), "--json", *extra],
                              capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    d = Daemon(tmp_path_factory.mktemp("ops-daemon"))
    yield d
    if d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait(30)
    d.stderr.close()
    d.notify.close()


def test_sd_notify_ready_status_and_watchdog_on_a_real_socket(daemon):
    ready = daemon.notify.wait_for("READY")
    assert ready["READY"] == "1" and ready["MAINPID"] == str(daemon.proc.pid)
    assert daemon.events("daemon.started"), "READY only after the service started"
    # STATUS lines report frames processed and queue depth as the run goes on.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        statuses = [m["STATUS"] for m in daemon.notify.messages if "STATUS" in m]
        if any("frames processed" in s and not s.startswith("frames processed 0,") for s in statuses):
            break
        time.sleep(0.2)
    assert any("queue depth" in s for s in statuses), statuses
    assert any(not s.startswith("frames processed 0,") for s in statuses), statuses
    # WATCHDOG_USEC=1 s: keep-alives every 0.5 s.
    first = len(daemon.notify.messages)
    time.sleep(1.6)
    watchdogs = [m for m in daemon.notify.messages[first:] if m.get("WATCHDOG") == "1"]
    assert len(watchdogs) >= 2, daemon.notify.messages[first:]


def test_metrics_scraped_over_http_from_the_running_daemon(daemon):
    deadline = time.monotonic() + 60
    while True:  # outcomes count once a frame's action is done (a re-focus takes a while)
        m = daemon.scrape()
        frames = {(s.labels["verdict"], s.labels["action"]): s.value for s in m["refocusd_frames"]
                  if s.name == "refocusd_frames_total"}
        if sum(frames.values()) >= 4 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert sum(frames.values()) >= 4, frames
    assert set(v for v, _ in frames) <= {"focused", "defocused", "unreadable"}
    count = [s.value for s in m["refocusd_classification_seconds"] if s.name.endswith("_count")][0]
    assert count >= sum(frames.values())
    assert {s.labels["component"]: s.value for s in m["refocusd_up"]} == {"driver": 1.0, "worker": 1.0}
    assert [(s.labels["device"], s.value) for s in m["refocusd_inference_device"]] == [("cpu", 1.0)]
    assert "refocusd_queue_depth" in m and "refocusd_refocus_success_ratio" in m
    assert m["refocusd_output_disk_free_bytes"][0].value > 0
    # The endpoint listens on loopback only.
    assert daemon.events("metrics.listening")[0]["url"] == f"http://127.0.0.1:{daemon.port}/metrics"


def test_status_is_healthy_while_the_daemon_runs(daemon):
    daemon.assert_alive()
    result = daemon.status("--require-running")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["healthy"] is True and report["problems"] == []
    assert report["health"]["state"] == "running" and report["health"]["pid"] == daemon.proc.pid
    assert report["health"]["device"].startswith("cpu")


def test_sighup_with_a_good_config_applies_reloadable_settings(daemon):
    daemon.assert_alive()
    daemon.config.write_text(config_text(daemon.port, level="debug"))
    daemon.proc.send_signal(signal.SIGHUP)
    reloaded = daemon.wait_event("config.reloaded")[-1]
    assert reloaded["applied"] == {"logging.level": ["info", "debug"]}
    assert reloaded["needs_restart"] == []
    # The new level is in force: debug lines (each reconstruction logs some; with 30 % autofocus
    # misses and 0.3-s deadlines there is one every few seconds) appear after the reload.
    deadline = time.monotonic() + 60
    while not [r for r in _records(daemon.log) if r.get("level") == "debug"]:
        assert time.monotonic() < deadline, "no debug line after reloading level=debug"
        time.sleep(0.2)


def test_sighup_with_a_bad_config_keeps_the_old_one(daemon):
    daemon.assert_alive()
    daemon.config.write_text(config_text(daemon.port, level="debug").replace('level = "debug"', 'level = "loud"')
                             + "\n[refocus]\nmax_retries = -1\n")
    daemon.proc.send_signal(signal.SIGHUP)
    rejected = daemon.wait_event("config.reload_rejected")[-1]
    assert any(p.startswith("logging.level") for p in rejected["problems"]), rejected
    assert any(p.startswith("refocus.max_retries") for p in rejected["problems"]), rejected
    assert daemon.proc.poll() is None
    assert daemon.scrape()["refocusd_frames"], "still serving after a rejected reload"
    assert len(daemon.events("config.reloaded")) == 1


def test_status_turns_unhealthy_when_the_disk_is_nearly_full(daemon):
    daemon.assert_alive()
    # 1 PB free is never there: the daemon (after SIGHUP) and status both call it unhealthy.
    daemon.config.write_text(config_text(daemon.port, level="debug", min_free_gb=1e6))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_event("config.reloaded", count=2)
    unhealthy = daemon.wait_event("health.unhealthy")[-1]
    assert any("disk nearly full" in p for p in unhealthy["problems"])
    result = daemon.status()
    assert result.returncode == 1, result.stdout
    assert any("disk nearly full" in p for p in json.loads(result.stdout)["problems"])
    daemon.config.write_text(config_text(daemon.port, level="debug"))
    daemon.proc.send_signal(signal.SIGHUP)
    daemon.wait_event("health.recovered")
    assert daemon.status().returncode == 0


def test_sigterm_stops_gracefully_with_stopping_notification(daemon):
    daemon.assert_alive()
    mark = len(daemon.notify.messages)
    daemon.proc.send_signal(signal.SIGTERM)
    out, _ = daemon.proc.communicate(timeout=120)
    assert daemon.proc.returncode == 0
    assert json.loads(out.strip().splitlines()[-1])["stopped"] is True
    stopping = daemon.notify.wait_for("STOPPING", after=mark, timeout=5)
    assert stopping["STOPPING"] == "1"
    health = json.loads((daemon.root / "state" / "health.json").read_text())
    assert health["state"] == "stopped" and health["exit_reason"] == "stopped"
    assert daemon.status().returncode == 0  # a clean stop is not a fault...
    stopped = daemon.status("--require-running")  # ...unless the daemon must be running
    assert stopped.returncode == 1 and "not running" in json.loads(stopped.stdout)["problems"][0]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
