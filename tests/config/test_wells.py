"""The one well-name parser, shared by the settings, the simulated plate and the report."""

from __future__ import annotations

import pytest

from refocusd.config.settings import PlateSettings
from refocusd.config.wells import parse_well, well_name, well_place


def test_settings_plate_and_report_read_well_names_alike() -> None:
    for name, place in (("A1", (0, 0)), ("H12", (7, 11)), ("B07", (1, 6)), ("AB12", (27, 11))):
        assert well_place(name) == place == parse_well(name.lower())
        assert parse_well(well_name(*place)) == place
    assert well_place("A1-Site_0") == (0, 0), "a site suffix keeps the well's place"
    for not_a_well in ("Pos0", "p0", "", "Position 12", "A0"):
        assert well_place(not_a_well) is None, not_a_well
    with pytest.raises(ValueError, match="not of the form"):
        parse_well("A1-Site_0")  # a configured well list names wells, not sites


def test_settings_refuse_a_well_off_the_plate_or_malformed() -> None:
    assert PlateSettings(rows=8, columns=12, wells=["h12", "B07"]).wells == ["h12", "B07"]
    with pytest.raises(ValueError, match="outside a 8x12 plate"):
        PlateSettings(rows=8, columns=12, wells=["I1"])
    with pytest.raises(ValueError, match="not of the form"):
        PlateSettings(wells=["Pos0"])
