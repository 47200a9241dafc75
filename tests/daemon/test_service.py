"""The spine end to end, in-process: simulated microscope → classifier → policy → ledger,
re-focus with a real z-sweep, reconstructions written with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import tifffile

from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.output.provenance import sha256_file
from refocusd.daemon.service import LEDGER_FILE, Service
from refocusd.daemon.output.writer import sidecar_path


def run_service(settings):
    service = Service(settings)
    service.start()
    try:
        return service.run()
    finally:
        service.close()


def originals(ledger: Ledger):
    return [f for f in ledger.frames() if f["parent_id"] is None]


def test_plate_scan_refocuses_exactly_the_missed_frames(settings_for):
    settings = settings_for(
        driver={"simulated": {"autofocus_miss_rate": 0.5, "autofocus_miss_um": [12.0, 30.0]}},
        refocus={"strategy": "sweep", "sweep_range_um": 40.0, "sweep_step_um": 4.0},
    )
    summary = run_service(settings)
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        frames = list(ledger.frames())
        by_id = {f["id"]: f for f in frames}
        first = originals(ledger)
    assert summary.frames == len(first) == 6

    truth = {f["id"]: json.loads(tifffile.TiffFile(f["source_uri"]).pages[0].description)["metadata"]["true_defocus_um"]
             for f in frames}
    missed = [f for f in first if abs(truth[f["id"]]) >= 12.0]
    assert missed, "the seed must give at least one autofocus miss"
    for frame in first:
        if frame in missed:
            assert frame["label"] == "defocused", frame
            assert frame["outcome"] == "reacquired", frame
        else:
            assert frame["label"] == "focused" and frame["outcome"] == "accepted", frame
    retries = [f for f in frames if f["parent_id"] is not None]
    accepted_retries = [f for f in retries if f["outcome"] == "accepted"]
    assert sorted(by_id[f["parent_id"]]["id"] for f in accepted_retries) == sorted(f["id"] for f in missed)
    for retry in accepted_retries:
        assert abs(truth[retry["id"]]) <= 4.0, "sweep must land within its step of true focus"
        assert retry["well"] == by_id[retry["parent_id"]]["well"]


def test_missed_timepoint_is_reconstructed_with_provenance(settings_for):
    settings = settings_for(
        plate={"wells": ["A1", "A2"]},
        driver={"simulated": {"autofocus_miss_rate": 1.0, "autofocus_miss_um": [15.0, 20.0]}},
        timelapse={"timepoints": 2, "interval_s": 60.0, "max_delay_s": 0.05},
    )
    summary = run_service(settings)
    assert summary.frames == 4
    assert summary.reconstructed == 4 and summary.reacquired == 0
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        first = originals(ledger)
        jobs = [ledger.job(j) for j in range(1, 5)]
    assert {f["outcome"] for f in first} == {"reconstructed"}
    assert {j["reason"] for j in jobs} == {"missed_timepoint"}
    for job in jobs:
        out = Path(job["output_path"])
        assert out.is_file() and out.is_relative_to(settings.service.output_root)
        provenance = json.loads(sidecar_path(out).read_text())
        source = Path(provenance["source"]["path"])
        assert provenance["reason"] == "missed_timepoint"
        assert provenance["source"]["sha256"] == sha256_file(source)
        assert provenance["reconstructor"]["weights_sha256"]
        assert provenance["classifier"]["label"] == "defocused"
        image = tifffile.imread(out)
        assert image.shape == tifffile.imread(source).shape and image.dtype == np.uint16


def test_restart_resumes_without_processing_anything_twice(settings_for):
    settings = settings_for(driver={"simulated": {"autofocus_miss_rate": 0.3}})
    first = run_service(settings)
    data = settings.driver.simulated.data_dir
    raw = {p: sha256_file(p) for p in sorted(data.rglob("*.tif"))}
    second = run_service(settings)
    assert {p: sha256_file(p) for p in sorted(data.rglob("*.tif"))} == raw, "raw data must never change"
    assert first.frames == 6
    assert second.frames == 0, "a finished plan must not be processed again"
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        keys = [f["source_key"] for f in ledger.frames()]
    assert len(keys) == len(set(keys))
