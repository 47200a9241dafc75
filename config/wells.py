"""Plate well names: the one parser behind the settings, the simulated plate and the report.

A well is one or two capital row letters (A..Z, then AA, AB... on 1536-well plates) and a
1-based column number, leading zeros allowed ("B7", "B07", "AB12"). Acquisition software
often adds a site ("A1-Site_0", "B07_s2"); anything else ("Pos0", "p0", "", "Position 12")
is a position without a place on a plate.
"""

from __future__ import annotations

import re
import string

_WELL = re.compile(r"^([A-Z]{1,2})0*([1-9][0-9]{0,2})(?P<site>[-_ .].*)?$")


def well_place(name: str, *, with_site: bool = True) -> tuple[int, int] | None:
    """'B7' → (1, 6), zero-based (row, column); ``None`` for a name that is not a plate well.

    ``with_site=False`` refuses a site suffix (a configured well list names wells only).
    """
    match = _WELL.match(name or "")
    if match is None or (match.group("site") is not None and not with_site):
        return None
    row = 0
    for letter in match.group(1):
        row = row * 26 + ord(letter) - ord("A") + 1
    return row - 1, int(match.group(2)) - 1


def parse_well(name: str) -> tuple[int, int]:
    """Like :func:`well_place` for a bare well name (any case), but raises ``ValueError``."""
    place = well_place(name.strip().upper(), with_site=False)
    if place is None:
        raise ValueError(f"well {name!r} is not of the form 'B7' (or 'AB12' on 1536-well plates)")
    return place


def row_name(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA (1536-well plates have 32 rows, A..AF)."""
    if index < 0:
        raise ValueError(f"row {index} is negative")
    letters = string.ascii_uppercase
    return letters[index] if index < 26 else letters[index // 26 - 1] + letters[index % 26]


def well_name(row: int, column: int) -> str:
    """Zero-based row and column → 'B7'-style name (columns are 1-based in the name)."""
    return f"{row_name(row)}{column + 1}"
