"""Run mode on the real core: refocusd runs a plate scan / time-lapse through pycromanager."""

from __future__ import annotations

from refocusd.daemon.ledger import Ledger
from refocusd.daemon.service import LEDGER_FILE, Service

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
