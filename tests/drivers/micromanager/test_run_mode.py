"""Run mode on the real core: refocusd runs a plate scan / time-lapse through pycromanager."""

from __future__ import annotations

import json
from pathlib import Path

import tifffile
from exit_blockers import exit_blockers
from structlog.testing import capture_logs

from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.output.provenance import sha256_file
from refocusd.daemon.service import LEDGER_FILE, Service
from refocusd.daemon.output.writer import sidecar_path
from refocusd.drivers.micromanager import CoreSession
from refocusd.drivers.micromanager.run_driver import MicroManagerRunDriver

TOLERANCE_UM = 1.5  # as calibrated in conftest


def run_service(settings, **kwargs):
    service = Service(settings, **kwargs)
    service.start()
    try:
        return service.run()
    finally:
        service.close()


def ledger_frames(settings):
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        return list(ledger.frames())


def test_plate_scan_detects_exactly_the_offset_fields_and_reacquires_them(mm_settings, plan_for):
    offsets = {1: 5.0, 4: -6.0}
    settings = mm_settings(plan_for(offsets))
    summary = run_service(settings)

    frames = ledger_frames(settings)
    originals = sorted((f for f in frames if f["parent_id"] is None), key=lambda f: f["position"])
    assert summary.frames == len(originals) == 6
    for f in originals:
        if f["position"] in offsets:
            assert f["label"] == "defocused" and f["outcome"] == "reacquired", f
            assert abs(f["z_um"] - offsets[f["position"]]) < 1e-6
        else:
            assert f["label"] == "focused" and f["outcome"] == "accepted", f
    retries = [f for f in frames if f["parent_id"] is not None]
    by_id = {f["id"]: f for f in frames}
    assert sorted(by_id[r["parent_id"]]["position"] for r in retries) == sorted(offsets)
    for retry in retries:
        parent = by_id[retry["parent_id"]]
        assert retry["outcome"] == "accepted" and retry["label"] == "focused", retry
        assert retry["retry"] == 1 and retry["well"] == parent["well"]
        assert abs(retry["z_um"]) <= TOLERANCE_UM, retry  # re-focused to Z = 0 within tolerance
        assert "retry=1" in retry["source_uri"] and retry["source_uri"] != parent["source_uri"]


def test_timelapse_point_that_cannot_be_saved_in_time_is_reconstructed_with_provenance(mm_settings, plan_for):
    settings = mm_settings(plan_for({1: 6.0}, n=3, loops=2, interval_s=1.0), timelapse={"max_delay_s": 0.05})
    summary = run_service(settings)

    frames = ledger_frames(settings)
    assert summary.frames == 6
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        jobs = [j for j in (ledger.job(i) for i in range(1, 10)) if j is not None]
    defocused = [f for f in frames if f["parent_id"] is None and f["label"] == "defocused"]
    assert sorted((f["position"], f["t"]) for f in defocused) == [(1, 0), (1, 1)]
    assert all(f["outcome"] in ("reconstructed", "not_improved") for f in defocused), defocused
    assert {j["reason"] for j in jobs} == {"missed_timepoint"} and len(jobs) == 2
    for job in jobs:
        out = Path(job["output_path"])
        assert out.is_file() and out.is_relative_to(settings.service.output_root)
        provenance = json.loads(sidecar_path(out).read_text())
        assert provenance["reason"] == "missed_timepoint"
        assert provenance["classifier"]["label"] == "defocused"
        source = Path(provenance["source"]["path"])  # the spooled copy of the in-memory frame
        assert provenance["source"]["sha256"] == sha256_file(source)
        assert tifffile.imread(out).shape == (256, 256)
    focused = [f for f in frames if f["label"] == "focused"]
    assert len(focused) == 4 and all(f["outcome"] == "accepted" for f in focused)


class FlakyCore:
    """The real core, except that the next ``failures[name]`` calls of a method raise the
    RuntimeError that pymmcore raises for a CMMError (fault injection; the device itself
    cannot be made to fail on demand)."""

    def __init__(self, core, failures: dict[str, int]) -> None:
        self._core = core
        self._failures = dict(failures)
        self.raised = 0

    def __getattr__(self, name):
        attr = getattr(self._core, name)
        if name not in self._failures:
            return attr

        def flaky(*args, **kwargs):
            if self._failures[name] > 0:
                self._failures[name] -= 1
                self.raised += 1
                raise RuntimeError(f"injected core error in {name}")
            return attr(*args, **kwargs)

        return flaky


def flaky_factory(failures: dict[str, int], holder: list):
    def build(settings, clock):
        session = CoreSession(settings.driver.micromanager)
        session.connect()
        session.wrap(lambda core: FlakyCore(core, failures))
        holder.append(session.core)
        return MicroManagerRunDriver(settings.driver.micromanager, settings.timelapse, clock=clock,
                                     experiment="mm", plate="beads", session=session)

    return build


def test_transient_stage_errors_during_refocus_are_retried_and_logged(mm_settings, plan_for):
    settings = mm_settings(plan_for({2: 5.0}, n=4))
    cores: list = []
    with capture_logs() as logs:
        summary = run_service(settings, driver_factory=flaky_factory({"set_position": 2}, cores))
    assert summary.frames == 4 and summary.reacquired == 1
    assert cores[0].raised == 2
    errors = [e for e in logs if e["event"] == "driver.error"]
    assert [e["during"] for e in errors] == ["stage move", "stage move"]


def test_persistent_stage_errors_fall_back_to_reconstruction_and_the_scan_completes(mm_settings, plan_for):
    settings = mm_settings(plan_for({2: 5.0}, n=4))
    cores: list = []
    with capture_logs() as logs:
        summary = run_service(settings, driver_factory=flaky_factory({"set_position": 10**6}, cores))
    assert summary.frames == 4 and summary.reacquired == 0 and summary.reconstructed + summary.not_improved == 1
    frames = ledger_frames(settings)
    (failed,) = [f for f in frames if f["label"] == "defocused"]
    assert failed["position"] == 2 and failed["outcome"] in ("reconstructed", "not_improved")
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        assert ledger.job(1)["reason"] == "refocus_failed" and ledger.job(2) is None
    assert [f["outcome"] for f in frames if f["label"] == "focused"] == ["accepted"] * 3
    refocus_failures = [e for e in logs if e["event"] == "refocus.failed"]
    assert len(refocus_failures) == settings.refocus.max_retries
    assert any(e["event"] == "driver.error" and e["during"] == "stage move" for e in logs)


def test_timelapse_at_one_field_reacquires_in_time_and_each_point_keeps_the_plans_z(mm_settings):
    # One field whose plan z is 5 µm off focus: every time point comes in defocused (the
    # driver must not carry the re-focused z over into the next point's event), and each
    # re-acquisition lands well before the deadline.
    plan = {"stage_positions": [{"x": 100.0, "y": 100.0, "z": 5.0, "name": "B1"}],
            "time_plan": {"interval": 0.8, "loops": 3}}
    settings = mm_settings(plan, timelapse={"max_delay_s": 10.0})
    summary = run_service(settings)

    frames = ledger_frames(settings)
    originals = [f for f in frames if f["parent_id"] is None]
    assert summary.frames == 3 and summary.reacquired == 3
    assert [(f["t"], f["label"], f["outcome"]) for f in originals] == [(t, "defocused", "reacquired") for t in range(3)]
    assert all(abs(f["z_um"] - 5.0) < 1e-6 for f in originals)
    retries = [f for f in frames if f["parent_id"] is not None]
    assert len(retries) == 3
    assert all(abs(r["z_um"]) <= TOLERANCE_UM and r["acquired_at"] <= r["deadline"] for r in retries)


def test_device_autofocus_that_does_not_find_focus_ends_in_reconstruction_not_a_stall(mm_settings, plan_for):
    # strategy = "device" runs the core's autofocus device. The demo 'Autofocus' device's
    # full_focus() leaves Z where it is, so the retries stay defocused and, after
    # max_retries, the point is reconstructed; the scan goes on. (With a working
    # autofocus device the same path re-acquires.)
    settings = mm_settings(plan_for({1: 6.0}, n=3), mm={"autofocus_device": "Autofocus"},
                           refocus={"strategy": "device"})
    with capture_logs() as logs:
        summary = run_service(settings)
    assert summary.frames == 3 and summary.reacquired == 0 and summary.reconstructed + summary.not_improved == 1
    assert [e["strategy"] for e in logs if e["event"] == "refocus.started"] == ["device"] * 2
    assert [e["z_um"] for e in logs if e["event"] == "refocus.done"] == [6.0] * 2
    retries = [f for f in ledger_frames(settings) if f["parent_id"] is not None]
    assert len(retries) == settings.refocus.max_retries
    assert all(r["label"] == "defocused" and r["position"] == 1 and abs(r["z_um"] - 6.0) < 1e-6 for r in retries)


def test_stop_wakes_the_wait_for_the_next_time_point(mm_settings, plan_for):
    """#14.10: with interval = 600 s, a stop (SIGTERM) between time points ends the run in
    seconds, not at the next point."""
    import threading
    import time

    settings = mm_settings(plan_for({}, n=2, loops=2, interval_s=600.0))
    stop = threading.Event()
    service = Service(settings, stop=stop)
    service.start()
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("summary", service.run()))
    try:
        runner.start()
        deadline = time.monotonic() + 120
        while len(ledger_frames(settings)) < 2:  # time point 0 done; point 1 is 600 s away
            assert time.monotonic() < deadline and runner.is_alive(), "time point 0 never finished"
            time.sleep(0.1)
        time.sleep(1.0)  # well inside the wait for point 1
        asked = time.monotonic()
        stop.set()
        runner.join(60)
        took = time.monotonic() - asked
    finally:
        stop.set()
        runner.join(60)
        service.close()
    assert not runner.is_alive() and took < 15, f"stopped after {took:.1f} s"
    assert result["summary"].frames == 2
    # Nothing is left that would keep the process from exiting (at exit Python joins every
    # non-daemon thread; idle executor workers end there, busy ones are waited for):
    # pycromanager's event thread waits for an end marker that an abort alone never sends,
    # and its engine spins until a pending event's start time even after an abort.
    deadline = time.monotonic() + 10
    while left := [t.name for t in exit_blockers()]:
        assert time.monotonic() < deadline, f"threads that block the process's exit: {left}"
        time.sleep(0.1)
