"""Faults: Micro-Manager unreachable at start, a camera that delivers nothing mid-run."""

from __future__ import annotations

import json
import subprocess
import sys

from pycromanager.acquisition.acq_eng_py.internal.engine import Engine
from structlog.testing import capture_logs

from refocusd.config.settings import MicroManagerSettings
from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.service import LEDGER_FILE, Service
from refocusd.drivers.micromanager import CoreSession
from refocusd.drivers.micromanager.run_driver import MicroManagerRunDriver


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


UNREACHABLE = """
import json, sys
from structlog.testing import capture_logs
from refocusd.config.settings import MicroManagerSettings
from refocusd.drivers.micromanager import CoreSession, MicroManagerUnavailable

settings = MicroManagerSettings(backend="bridge", bridge_port=int(sys.argv[1]), connect_retries=2,
                                connect_backoff_s=0.05, plan={})
slept = []
session = CoreSession(settings, sleep=slept.append)
error = None
with capture_logs() as logs:
    try:
        session.connect()
    except MicroManagerUnavailable as exc:
        error = str(exc)
print(json.dumps({"error": error, "slept": slept, "connected": session.connected,
                  "attempts": [e["attempt"] for e in logs if e["event"] == "driver.connect_failed"]}))
"""


def test_unreachable_micromanager_at_start_is_retried_with_backoff_then_a_clear_error():
    """Nothing listens on the bridge port: unreachable. In a fresh process: once a headless
    (Python-backend) core runs in a process, pycromanager's ``Core(port=...)`` hands that core
    back whatever the port, and other tests of this worker may have started one. (A missing
    mm_dir is a configuration mistake, exit 2: test_config_mistakes.py, #14.16.)"""
    result = subprocess.run([sys.executable, "-c", UNREACHABLE, str(_free_port())],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["error"] and "Micro-Manager not reachable" in outcome["error"]
    assert outcome["slept"] == [0.05, 0.1]
    assert outcome["attempts"] == [1, 2, 3]
    assert not outcome["connected"]


class FailingSnaps:
    """The engine's real core, except that its next ``n`` snaps raise as a failing camera
    would (fault injection into pycromanager's acquisition engine)."""

    def __init__(self, core, n: int) -> None:
        self._core, self.left = core, n

    def snap_image(self, *args):
        if self.left > 0:
            self.left -= 1
            raise RuntimeError("injected: camera returned no image")
        return self._core.snap_image(*args)

    def __getattr__(self, name):
        return getattr(self._core, name)


def test_a_point_whose_image_never_arrives_is_marked_and_the_plan_goes_on(mm_settings, plan_for):
    settings = mm_settings(plan_for({}, n=4), mm={"image_timeout_s": 1.5})
    service = Service(settings)
    service.start()
    engine = Engine.get_instance()
    real_core = engine.core
    engine.core = FailingSnaps(real_core, 1)
    try:
        with capture_logs() as logs:
            summary = service.run()
    finally:
        engine.core = real_core
        service.close()

    assert summary.frames == 4 and summary.quarantined == 1 and summary.focused == 3
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        (marked,) = list(ledger.frames(outcome="quarantined"))
    assert marked["position"] == 0 and "no pixels" in marked["reason"]
    assert any(e["event"] == "driver.error" and e["during"] == "acquire" for e in logs)
    assert any(e["event"] == "driver.acquisition_restarted" for e in logs)


class DeadCore:
    """A core handle that no longer answers (a lost connection), for the driver's session."""

    def __getattr__(self, name):
        def dead(*args, **kwargs):
            raise RuntimeError("injected: connection to Micro-Manager lost")

        return dead


def test_micromanager_lost_mid_run_is_logged_reconnected_and_the_plan_resumes(mm_settings, plan_for):
    settings = mm_settings(plan_for({}, n=4), mm={"image_timeout_s": 1.5, "core_retries": 1})
    mm = settings.driver.micromanager
    sessions: list[CoreSession] = []

    def factory(s, clock):
        session = CoreSession(mm)
        session.connect()
        sessions.append(session)
        return MicroManagerRunDriver(mm, s.timelapse, clock=clock, session=session)

    service = Service(settings, driver_factory=factory)
    service.start()
    engine = Engine.get_instance()
    real_core = engine.core
    engine.core = FailingSnaps(real_core, 1)  # position 0 delivers nothing...
    sessions[0].wrap(lambda core: DeadCore())  # ...and the driver's connection is gone
    try:
        with capture_logs() as logs:
            summary = service.run()
    finally:
        engine.core = real_core
        service.close()

    events = [e["event"] for e in logs]
    assert "driver.reconnecting" in events and "driver.connected" in events
    assert any(e["event"] == "driver.error" and e["during"] == "health check" for e in logs)
    assert sessions[0].connected and not isinstance(sessions[0].core, DeadCore)
    assert summary.frames == 4 and summary.focused == 3 and summary.quarantined == 1  # p0 marked, the rest resumed


def test_refocusd_run_exits_3_with_a_clear_message_when_micromanager_is_unreachable(tmp_path, bead_calibration):
    config = tmp_path / "refocusd.toml"
    config.write_text(f"""
[service]
state_dir = "state"
output_root = "out"
[driver]
kind = "micromanager"
[driver.micromanager]
backend = "bridge"
bridge_port = {_free_port()}
connect_retries = 1
connect_backoff_s = 0.01
[driver.micromanager.plan]
stage_positions = [{{x = 0.0, y = 0.0}}]
[models]
device = "cpu"
classifier = "{bead_calibration}"
""")
    result = subprocess.run([sys.executable, "-m", "refocusd.daemon.cli", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 3, result.stderr
    assert "Micro-Manager not reachable" in result.stderr and "bridge on port" in result.stderr
    assert "after 2 attempt(s)" in result.stderr


def test_an_exception_in_the_image_hook_is_logged_and_the_image_still_passes_through(tmp_path):
    # pycromanager aborts the acquisition silently when image_process_fn raises; the
    # driver's hook must never raise. (Called directly: nothing in a healthy core makes it fail.)
    import numpy as np

    from refocusd.config.settings import TimelapseSettings
    from refocusd.drivers import SystemClock

    mm = MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg", plan={"stage_positions": [{"x": 0, "y": 0}]})
    driver = MicroManagerRunDriver(mm, TimelapseSettings(), clock=SystemClock())
    image = np.zeros((8, 8), np.uint16)
    with capture_logs() as logs:
        out_image, out_metadata = driver._on_image(image, None)  # metadata None: .get() raises inside
    assert out_image is image and out_metadata is None
    assert [e["event"] for e in logs] == ["driver.hook_error"]
