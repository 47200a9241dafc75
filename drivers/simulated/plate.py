"""Plate geometry: well names, the wells selected for imaging, and the XY of every field.

Coordinates are stage micrometres with the centre of well A1 at (0, 0); x grows with the
column, y with the row. Wells are visited in serpentine (boustrophedon) order, as plate
scanners do to keep stage travel short, and so are the fields inside a well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from refocusd.config.settings import PlateSettings
from refocusd.config.wells import parse_well, well_name

# Fields inside a well stay within this fraction of the well pitch (a 96-well plate has
# 9 mm pitch and ~6.4 mm wells): images near the wall are useless in phase contrast.
_WELL_USABLE_FRACTION = 0.6


@dataclass(frozen=True, slots=True)
class PlatePosition:
    """One imaging field: ``position_index`` counts fields inside ``well`` from 0."""

    well: str
    position_index: int
    x_um: float
    y_um: float


def well_names(rows: int, columns: int) -> list[str]:
    """All wells of a rows×columns plate in row-major order: A1, A2, ..., H12."""
    return [well_name(r, c) for r in range(rows) for c in range(columns)]


def selected_wells(plate: PlateSettings) -> list[str]:
    """The wells to image, canonical names, each once, in serpentine scan order."""
    wanted: set[tuple[int, int]] | None = None
    if plate.wells is not None:
        wanted = set()
        for name in plate.wells:
            row, col = parse_well(name)
            if not (0 <= row < plate.rows and 0 <= col < plate.columns):
                raise ValueError(f"well {name!r} is outside a {plate.rows}x{plate.columns} plate")
            wanted.add((row, col))
    order: list[str] = []
    for row in range(plate.rows):
        cols = range(plate.columns) if row % 2 == 0 else range(plate.columns - 1, -1, -1)
        order.extend(well_name(row, c) for c in cols if wanted is None or (row, c) in wanted)
    return order


def well_center_um(plate: PlateSettings, well: str) -> tuple[float, float]:
    row, col = parse_well(well)
    return col * plate.well_spacing_um, row * plate.well_spacing_um


def field_offsets_um(count: int, step_um: float) -> list[tuple[float, float]]:
    """``count`` field centres on a centred, near-square grid, serpentine order."""
    if count < 1:
        raise ValueError(f"positions per well must be ≥ 1, got {count}")
    ncols = math.ceil(math.sqrt(count))
    nrows = math.ceil(count / ncols)
    offsets: list[tuple[float, float]] = []
    for r in range(nrows):
        cols = range(ncols) if r % 2 == 0 else range(ncols - 1, -1, -1)
        for c in cols:
            offsets.append(((c - (ncols - 1) / 2) * step_um, (r - (nrows - 1) / 2) * step_um))
    # A partly filled last row: keep the first ``count`` in scan order.
    return offsets[:count]


def field_step_um(plate: PlateSettings, field_of_view_um: float | None = None) -> float:
    """Spacing of fields inside a well: a field of view plus a margin (no overlap), shrunk
    when the grid would not fit inside the usable part of the well."""
    n = math.ceil(math.sqrt(plate.positions_per_well))
    fit = _WELL_USABLE_FRACTION * plate.well_spacing_um / n
    if field_of_view_um is None:
        return fit
    return min(1.1 * field_of_view_um, fit)


def plate_positions(plate: PlateSettings, field_of_view_um: float | None = None) -> list[PlatePosition]:
    """Every imaging field of the selected wells, in acquisition order."""
    step = field_step_um(plate, field_of_view_um)
    offsets = field_offsets_um(plate.positions_per_well, step)
    sites: list[PlatePosition] = []
    for well in selected_wells(plate):
        cx, cy = well_center_um(plate, well)
        sites.extend(PlatePosition(well, i, cx + dx, cy + dy) for i, (dx, dy) in enumerate(offsets))
    return sites
