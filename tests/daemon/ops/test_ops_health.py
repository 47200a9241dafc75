"""Health judgement: what makes `refocusd status` exit 1, from real health files and a real ledger."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import replace

from refocusd.config import load_settings
from refocusd.config.settings import HealthSettings
from refocusd.daemon.ops.health import HEALTH_FILE, HealthSnapshot, pid_alive, problems, read_health
from refocusd.daemon.state.ledger import LEDGER_FILE, Ledger
from refocusd.daemon.ops.supervision import Supervisor
from refocusd.drivers import Capabilities, DriverHealth

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
LIMITS = HealthSettings(interval_s=10, queue_stuck_after_s=600, min_free_gb=1)
NOW = 1_800_000_000.0


def running(**changes) -> HealthSnapshot:
    base = HealthSnapshot(state="running", pid=1, written_at=NOW - 5, interval_s=10, output_root="/srv/out",
                          disk_free_bytes=50 * 10**9, driver_up=True)
    return replace(base, **changes)


def test_a_fresh_running_daemon_is_healthy():
    assert problems(running(), LIMITS, now=NOW, pid_alive=True) == []


def test_each_fault_is_named():
    cases = {
        "not responding": running(written_at=NOW - 31),  # three missed writes
        "gone without a clean stop": running(),
        "driver down: watcher thread died": running(driver_up=False, driver_detail="watcher thread died"),
        "reconstruction worker dead": running(worker_up=False),
        "queue stuck: 4 job(s), oldest waiting 900 s": running(queue_depth=4, oldest_pending_job_at=NOW - 900),
        "disk nearly full: 0.50 GB free on /srv/out": running(disk_free_bytes=5 * 10**8),
    }
    for expected, snap in cases.items():
        found = problems(snap, LIMITS, now=NOW, pid_alive=expected != "gone without a clean stop")
        assert len(found) == 1 and expected in found[0], (expected, found)


def test_stopped_or_never_run_is_a_fault_only_when_running_is_required():
    stopped = running(state="stopped", exit_reason="completed", written_at=NOW - 86400)
    assert problems(stopped, LIMITS, now=NOW) == []
    assert "not running (stopped: completed)" in problems(stopped, LIMITS, now=NOW, require_running=True)[0]
    assert problems(None, LIMITS, now=NOW) == []
    assert problems(None, LIMITS, now=NOW, require_running=True)
    # A stuck queue or a full disk matter even while the daemon is stopped.
    assert problems(replace(stopped, disk_free_bytes=1), LIMITS, now=NOW)


def test_pid_alive_tells_a_dead_process():
    child = subprocess.Popen(["sleep", "30"])
    assert pid_alive(child.pid) is True
    child.kill()
    child.wait()
    assert pid_alive(child.pid) is False


class DownDriver:
    """A driver whose device is gone (the HealthReporting protocol real drivers implement)."""

    capabilities = Capabilities()

    def frames(self):
        return iter(())

    def close(self) -> None:
        pass

    def health(self) -> DriverHealth:
        return DriverHealth(up=False, detail="Micro-Manager core not responding")


class StoppedWorker:
    def alive(self) -> bool:
        return False


def test_status_exits_1_naming_what_is_wrong(tmp_path):
    config = tmp_path / "refocusd.toml"
    config.write_text('[service]\nstate_dir = "state"\noutput_root = "out"\n[health]\ninterval_s = 60\n')
    settings = load_settings(config)
    ledger = Ledger.open(settings.service.state_dir / LEDGER_FILE)
    supervisor = Supervisor(settings)
    supervisor.started(run_id="r1", ledger=ledger, driver=DownDriver(), worker=StoppedWorker())
    try:
        snap = read_health(settings.service.state_dir / HEALTH_FILE)
        assert snap is not None and snap.state == "running" and snap.driver_up is False
        result = subprocess.run([*REFOCUSD, "status", "--config", str(config), "--json"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 1, result.stdout + result.stderr
        report = json.loads(result.stdout)
        assert report["healthy"] is False
        assert report["problems"] == ["driver down: Micro-Manager core not responding", "reconstruction worker dead"]
        human = subprocess.run([*REFOCUSD, "status", "--config", str(config)], capture_output=True, text=True,
                               timeout=120)
        assert human.returncode == 1 and "unhealthy driver down: Micro-Manager core not responding" in human.stdout
    finally:
        supervisor.close("error")
        ledger.close()
    # The health file ages: after three missed writes the daemon counts as not responding.
    stale = replace(snap, written_at=time.time() - 200)
    (settings.service.state_dir / HEALTH_FILE).write_text(json.dumps(stale.as_dict()))
    again = subprocess.run([*REFOCUSD, "status", "--config", str(config), "--json"],
                           capture_output=True, text=True, timeout=120)
    assert any("not responding" in p for p in json.loads(again.stdout)["problems"])
