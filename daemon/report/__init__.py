"""``refocusd report``: per experiment and plate, CSV tables and pictures from the ledger.

Layout under the output folder::

    <experiment>/<plate>/points.csv      one row per acquired point (re-acquisitions folded in)
    <experiment>/<plate>/wells.csv       per well: frames by category and the well's colour
    <experiment>/<plate>/plate_map.png   wells coloured accepted / re-acquired / reconstructed / failed
    <experiment>/<plate>/timeline.png    time-lapses only: every position's points over time
"""

from __future__ import annotations

import csv
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.report.data import CATEGORIES, PlateData, PointRow, plates_from_frames, worst
from refocusd.config.wells import well_place
from refocusd.daemon.report.pictures import PlateMapLayout, plate_map, timeline, well_sort_key

__all__ = ["PlateReport", "write_report", "PlateMapLayout", "CATEGORIES"]


@dataclass(frozen=True, slots=True)
class PlateReport:
    experiment: str
    plate: str
    points: int
    wells: int
    folder: Path
    files: tuple[Path, ...]


def write_report(ledger: Ledger, out: Path, *, rows: int, columns: int) -> list[PlateReport]:
    """Write every plate's tables and pictures; ``rows``×``columns`` is the plate format
    (widened if the ledger has wells outside it)."""
    reports = []
    for plate in plates_from_frames(ledger.frames()):
        folder = out / _safe(plate.experiment or "experiment") / _safe(plate.plate or "plate")
        folder.mkdir(parents=True, exist_ok=True)
        files = [_points_csv(plate, folder / "points.csv"), _wells_csv(plate, folder / "wells.csv")]
        seen = [place for w in plate.by_well() if (place := well_place(w)) is not None]
        layout = PlateMapLayout(
            rows=max([rows, *(r + 1 for r, _ in seen)]), columns=max([columns, *(c + 1 for _, c in seen)])
        )
        files.append(plate_map(plate, layout, folder / "plate_map.png"))  # positions that are not wells: CSVs
        if plate.timepoints > 1:
            files.append(timeline(plate, folder / "timeline.png"))
        reports.append(PlateReport(plate.experiment, plate.plate, len(plate.points), len(plate.by_well()),
                                   folder, tuple(files)))
    return reports


def _points_csv(plate: PlateData, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[f.name for f in fields(PointRow)])
        writer.writeheader()
        writer.writerows(asdict(p) for p in plate.points)
    return path


def _wells_csv(plate: PlateData, path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["well", "points", *CATEGORIES, "colour"])
        for well, counts in sorted(plate.by_well().items(), key=lambda item: well_sort_key(item[0])):
            writer.writerow([well, sum(counts.values()), *(counts[c] for c in CATEGORIES), worst(counts)])
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "unnamed"
