"""`refocusd report` on the ledger of a real `refocusd demo` run: CSV tables and PNG pictures."""

from __future__ import annotations

import csv
import json
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from refocusd.config.wells import well_place as parse_well
from refocusd.daemon.report.pictures import COLOURS, PlateMapLayout

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
# The report's rule, restated from the README: a well shows its worst frame.
SEVERITY = ["failed", "pending", "not_improved", "reconstructed", "reacquired", "accepted"]
OUTCOME_CATEGORY = {"accepted": "accepted", "reacquired": "reacquired", "reconstructed": "reconstructed",
                    "not_improved": "not_improved",
                    "reconstruction_failed": "failed", "quarantined": "failed", "refocus_failed": "failed",
                    "missed": "failed"}


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    demo = subprocess.run([*REFOCUSD, "demo", "--out", str(root / "demo"), "--wells", "12", "--timepoints", "4",
                           "--seed", "0", "--json"], capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr[-3000:]
    config = root / "report.toml"
    config.write_text(f'[service]\nstate_dir = "{root / "demo" / "state"}"\n')
    result = subprocess.run([*REFOCUSD, "report", "--config", str(config), "--out", str(root / "report")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "demo" / "state" / "ledger.sqlite", root / "report", json.loads(demo.stdout.splitlines()[-1])


def ledger_wells(ledger: Path) -> dict[tuple[str, str], dict[str, Counter]]:
    with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT experiment, plate, well, outcome FROM frames WHERE parent_id IS NULL").fetchall()
    plates: dict[tuple[str, str], dict[str, Counter]] = {}
    for experiment, plate, well, outcome in rows:
        plates.setdefault((experiment, plate), {}).setdefault(well, Counter())[
            OUTCOME_CATEGORY.get(outcome, "pending")] += 1
    return plates


def rgb(hex_colour: str) -> tuple[int, int, int]:
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


def well_colour(pixels: np.ndarray, layout: PlateMapLayout, well: str) -> tuple[int, int, int]:
    """The commonest colour inside the well (its label text covers a small part)."""
    x, y = layout.centre_px(well)
    half = int(layout.radius_px * 0.6)
    patch = pixels[y - half:y + half, x - half:x + half, :3].reshape(-1, 3)
    colours, counts = np.unique(patch, axis=0, return_counts=True)
    return tuple(int(v) for v in colours[counts.argmax()])


def test_one_folder_per_experiment_and_plate_with_csv_and_pictures(demo_report):
    ledger, out, summary = demo_report
    plates = ledger_wells(ledger)
    assert set(plates) == {("demo-plate-scan", "plate1"), ("demo-time-lapse", "plate2")}
    for (experiment, plate), wells in plates.items():
        folder = out / experiment / plate
        with open(folder / "points.csv", newline="") as fh:
            points = list(csv.DictReader(fh))
        assert len(points) == sum(sum(c.values()) for c in wells.values())
        assert Counter(p["category"] for p in points) == sum(wells.values(), Counter())
        with open(folder / "wells.csv", newline="") as fh:
            table = {row["well"]: row for row in csv.DictReader(fh)}
        assert set(table) == set(wells)
        for well, counts in wells.items():
            assert {c: int(table[well][c]) for c in SEVERITY} == {c: counts[c] for c in SEVERITY}
        assert (folder / "timeline.png").exists() == (experiment == "demo-time-lapse")
    assert sum(sum(sum(c.values()) for c in w.values()) for w in plates.values()) == summary["frames"]


def test_plate_map_size_and_every_well_colour_match_the_ledger(demo_report):
    ledger, out, _ = demo_report
    for (experiment, plate), wells in ledger_wells(ledger).items():
        image = Image.open(out / experiment / plate / "plate_map.png")
        layout = PlateMapLayout(rows=8, columns=12)
        assert image.size == layout.size == (50 + 12 * 64 + 300, 80 + 8 * 64 + 20)
        pixels = np.asarray(image.convert("RGB"))
        for row in range(8):
            for col in range(12):
                well = f"{'ABCDEFGH'[row]}{col + 1}"
                counts = wells.get(well)
                expected = "not imaged" if counts is None else next(c for c in SEVERITY if counts[c])
                assert well_colour(pixels, layout, well) == rgb(COLOURS[expected]), (plate, well, expected)
    # Seed 0: re-acquisitions in the plate scan, reconstructions in the time-lapse; three colours.
    shown = {next(c for c in SEVERITY if counts[c]) for w in ledger_wells(ledger).values() for counts in w.values()}
    assert {"accepted", "reacquired"} <= shown, shown
    # The demo's reconstructions show in their own category: improved or not (the score decides).
    assert shown & {"reconstructed", "not_improved"}, shown


def test_timeline_is_a_readable_picture(demo_report):
    _, out, _ = demo_report
    image = Image.open(out / "demo-time-lapse" / "plate2" / "timeline.png")
    width, height = image.size
    assert width >= 800 and height >= 300  # 12 positions × 4 points, legend beside
    colours = {tuple(c) for c in np.asarray(image.convert("RGB")).reshape(-1, 3)[::7]}
    assert rgb(COLOURS["accepted"]) in colours


def test_wells_parse_like_the_plate_settings():
    assert parse_well("A1") == (0, 0) and parse_well("H12") == (7, 11) and parse_well("AF48") == (31, 47)


def test_report_on_position_names_that_are_not_wells(tmp_path):
    """#14.12, #14.13: NIS frames (no well), Micro-Manager and HCS position names: CSVs and
    pictures, no traceback; only real well names are placed on the plate map."""
    from refocusd.daemon.state.ledger import Ledger
    from refocusd.drivers import Coordinates, SourceRef

    state = tmp_path / "state"
    with Ledger.open(state / "ledger.sqlite") as ledger:
        ledger.start_run("r", "odd", "{}", {})
        for well in ("", "Pos0", "A1-Site_0", "p0", "B3", "Position 12"):
            for t in (0, 1):
                ledger.record_quarantine(run_id="r", source=SourceRef(uri=f"/data/{well or 'nis'}_{t}.tif"),
                                         reason="test", experiment="odd",
                                         coords=Coordinates(plate="p", well=well, t=t))
    config = tmp_path / "report.toml"
    config.write_text(f'[service]\nstate_dir = "{state}"\n')
    result = subprocess.run([*REFOCUSD, "report", "--config", str(config), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    folder = tmp_path / "report" / "odd" / "p"
    assert {p.name for p in folder.iterdir()} >= {"points.csv", "wells.csv", "plate_map.png", "timeline.png"}
    with open(folder / "wells.csv", newline="") as fh:
        wells = {row["well"] for row in csv.DictReader(fh)}
    assert wells == {"", "Pos0", "A1-Site_0", "p0", "B3", "Position 12"}
    assert parse_well("A1-Site_0") == (0, 0) and parse_well("B3") == (1, 2)
    for name in ("", "Pos0", "p0", "Position 12"):
        assert parse_well(name) is None, name
    # An 8 x 12 plate: nothing was stretched to fit 'p0' as row P or 'Pos0' as row POS.
    assert Image.open(folder / "plate_map.png").size == PlateMapLayout(rows=8, columns=12).size
