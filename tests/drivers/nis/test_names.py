"""NIS-Elements index tokens in file names: any order, padding and case."""

import pytest

from refocusd.drivers.nis.names import NisIndices, parse_indices


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("run_t001xy01c1.tif", NisIndices(t=1, xy=1, c=1)),
        ("wellXY01C1.tif", NisIndices(xy=1, c=1)),
        ("scan_z03_T2.TIF", NisIndices(t=2, z=3)),
        ("plate 2 c2xy12t0007z1.tiff", NisIndices(t=7, xy=12, z=1, c=2)),
        ("exp-XY3-T10.ome.tif", NisIndices(t=10, xy=3)),
        ("Ärger t5.nd2", NisIndices(t=5)),
        ("no_tokens_here.tif", NisIndices()),
        ("t001_trailing_text.tif", NisIndices()),  # tokens only count at the end of the stem
    ],
)
def test_tokens(name, expected):
    assert parse_indices(name) == expected
