"""Plate geometry of the simulated microscope: names, selection, field layout."""

from __future__ import annotations

import itertools
import math

import pytest

from refocusd.config.settings import PlateSettings
from refocusd.config.wells import parse_well, row_name
from refocusd.drivers.simulated.plate import (
    PlatePosition,
    field_offsets_um,
    plate_positions,
    selected_wells,
    well_center_um,
    well_names,
)


def test_96_well_names_run_a1_to_h12() -> None:
    names = well_names(8, 12)
    assert len(names) == 96 == len(set(names))
    assert names[0] == "A1" and names[11] == "A12" and names[12] == "B1" and names[-1] == "H12"


def test_1536_well_rows_go_past_z() -> None:
    assert [row_name(r) for r in (0, 25, 26, 31)] == ["A", "Z", "AA", "AF"]
    names = well_names(32, 48)
    assert names[-1] == "AF48"
    assert all(parse_well(n) == divmod(i, 48) for i, n in enumerate(names))


@pytest.mark.parametrize("bad", ["", "7", "B", "B-1", "1B", "ÄB1", "ABC1"])
def test_parse_well_rejects_malformed_names(bad: str) -> None:
    with pytest.raises(ValueError, match="not of the form"):
        parse_well(bad)


def test_all_wells_are_scanned_serpentine() -> None:
    order = selected_wells(PlateSettings(rows=3, columns=4))
    assert order == ["A1", "A2", "A3", "A4", "B4", "B3", "B2", "B1", "C1", "C2", "C3", "C4"]


def test_selection_is_canonical_deduplicated_and_in_scan_order() -> None:
    plate = PlateSettings(wells=["b3", "A1", "B1", "A1", "H12"])
    assert selected_wells(plate) == ["A1", "B3", "B1", "H12"]


def test_well_centres_follow_the_pitch() -> None:
    plate = PlateSettings(well_spacing_um=4500.0)
    assert well_center_um(plate, "A1") == (0.0, 0.0)
    assert well_center_um(plate, "C5") == (4 * 4500.0, 2 * 4500.0)


@pytest.mark.parametrize("count", [1, 2, 4, 5, 9, 10])
def test_field_offsets_are_distinct_centred_and_on_the_step(count: int) -> None:
    step = 700.0
    offsets = field_offsets_um(count, step)
    assert len(offsets) == count == len(set(offsets))
    if count == 1:
        assert offsets == [(0.0, 0.0)]
    # A full grid is centred on the well; neighbours in scan order are one step apart.
    n = math.isqrt(count)
    if n * n == count:
        assert abs(sum(x for x, _ in offsets)) < 1e-9 and abs(sum(y for _, y in offsets)) < 1e-9
    for (x0, y0), (x1, y1) in itertools.pairwise(offsets):
        assert math.hypot(x1 - x0, y1 - y0) == pytest.approx(step)


def test_positions_per_well_stay_inside_the_well_without_overlap() -> None:
    fov = 600.0
    plate = PlateSettings(wells=["A1", "B2"], positions_per_well=9)
    sites = plate_positions(plate, field_of_view_um=fov)
    assert len(sites) == 18
    assert [s.position_index for s in sites[:9]] == list(range(9))
    assert {s.well for s in sites[:9]} == {"A1"} and {s.well for s in sites[9:]} == {"B2"}
    for site in sites:
        cx, cy = well_center_um(plate, site.well)
        assert math.hypot(site.x_um - cx, site.y_um - cy) < 0.5 * plate.well_spacing_um * 0.7
    a1 = [(s.x_um, s.y_um) for s in sites if s.well == "A1"]
    gaps = [math.dist(p, q) for i, p in enumerate(a1) for q in a1[i + 1 :]]
    assert min(gaps) >= fov  # fields do not overlap


def test_dense_field_grids_shrink_to_fit_small_wells() -> None:
    plate = PlateSettings(rows=16, columns=24, well_spacing_um=4500.0, wells=["A1"], positions_per_well=16)
    sites = plate_positions(plate, field_of_view_um=1300.0)
    assert max(abs(s.x_um) for s in sites) <= 0.3 * 4500.0 + 1e-9
    assert sites[0] == PlatePosition("A1", 0, sites[0].x_um, sites[0].y_um)
