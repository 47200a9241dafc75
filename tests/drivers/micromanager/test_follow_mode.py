"""Follow mode: refocusd follows an NDTiff dataset that a concurrent pycromanager
acquisition (on the real demo core) is writing, as it would follow Micro-Manager's."""

from __future__ import annotations

import useq
from pycromanager import Acquisition

from refocusd.config.settings import TimelapseSettings
from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.service import LEDGER_FILE, Service
from refocusd.drivers.micromanager import CoreSession, plan_steps
from refocusd.config.settings import MicroManagerSettings
import threading


class GuiAcquisition:
    """Stands in for the Micro-Manager GUI: acquires a plan into an NDTiff dataset.

    pycromanager's Python writer leaves NDTiff.index in an 8 KiB write buffer until the end;
    the image-saved callback flushes it after each image so entries land one by one, as a
    writer that does not buffer its index would have them.
    """

    def __init__(self, root, plan: dict, mm: dict) -> None:
        CoreSession(MicroManagerSettings(**mm)).connect()  # the shared demo core, bead camera
        self.acq = Acquisition(directory=str(root), name="gui", image_saved_fn=self._flush)
        self.path = self.acq.get_dataset().path.rstrip("/")
        steps = plan_steps(useq.MDASequence.model_validate(plan), TimelapseSettings())
        for step in steps:
            self.acq.acquire(step.event)
        self.images = len(steps)
        self.acq.mark_finished()

    saved = 0

    def _flush(self, axes, dataset) -> None:
        self.saved += 1
        index = getattr(dataset, "_index_file", None)
        if index is not None and not index.closed:
            index.flush()

    def wait(self) -> None:
        self.acq.await_completion()


def follow_settings(mm_settings, dataset, tmp_path, **mm):
    return mm_settings(
        None,
        mm={"mode": "follow", "follow_dataset": dataset, "follow_idle_timeout_s": 2.0, "follow_poll_s": 0.05, **mm},
    )


def run(settings, **kwargs):
    service = Service(settings, **kwargs)
    service.start()
    try:
        return service.run()
    finally:
        service.close()


def test_follows_a_growing_dataset_and_reconstructs_exactly_the_defocused_images(mm_settings, plan_for, tmp_path):
    mm = mm_settings(None).driver.micromanager
    gui = GuiAcquisition(tmp_path / "gui", plan_for({2: 6.0}, n=4, loops=3, interval_s=0.4),
                         mm.model_dump(exclude={"plan"}))
    settings = follow_settings(mm_settings, gui.path, tmp_path)
    summary = run(settings)
    gui.wait()

    assert summary.frames == gui.images == 12
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        frames = list(ledger.frames())
        jobs = [ledger.job(i) for i in range(1, 4)]
    defocused = sorted((f["position"], f["t"]) for f in frames if f["label"] == "defocused")
    assert defocused == [(2, 0), (2, 1), (2, 2)]
    assert all(f["outcome"] == "reconstructed" for f in frames if f["label"] == "defocused")
    assert all(f["outcome"] == "accepted" for f in frames if f["label"] == "focused")
    assert {j["reason"] for j in jobs} == {"no_stage_control"}


def test_restart_mid_acquisition_resumes_and_processes_nothing_twice(mm_settings, plan_for, tmp_path):
    mm = mm_settings(None).driver.micromanager
    gui = GuiAcquisition(tmp_path / "gui", plan_for({1: -5.0}, n=4, loops=3, interval_s=0.6),
                         mm.model_dump(exclude={"plan"}))
    settings = follow_settings(mm_settings, gui.path, tmp_path)
    stop = threading.Event()
    saved_at_stop: list[int] = []

    def stop_after_four(outcome) -> None:
        if len(saved_at_stop) < 4:
            saved_at_stop.append(gui.saved)
        if len(saved_at_stop) == 4:
            stop.set()

    first = run(settings, stop=stop, on_outcome=stop_after_four)
    assert first.frames == 4
    assert saved_at_stop[-1] < gui.images, "the first run must stop while the acquisition is still writing"
    second = run(settings)
    gui.wait()

    assert second.frames == gui.images - 4 == 8
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        frames = list(ledger.frames())
    keys = [f["source_key"] for f in frames]
    assert len(keys) == len(set(keys)) == 12
    assert sorted((f["position"], f["t"]) for f in frames if f["label"] == "defocused") == [(1, 0), (1, 1), (1, 2)]
