"""Index tokens in NIS-Elements export file names.

NIS-Elements appends the loop indices of each exported frame to the name it is given:
``run_t001xy01c1.tif``, ``wellXY01C1.tif``, ``scan_z03_T2.tif``. The tokens ``t``, ``xy``,
``z`` and ``c`` come in any order, with any zero padding, in either case, optionally
separated by ``_``, ``-`` or a space; they form the end of the file's stem.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The run of tokens that ends the stem; searched leftmost-first so the whole run is taken.
_TOKEN_RUN = re.compile(r"(?:[_\- ]?(?:xy|t|z|c)\d+)+$", re.IGNORECASE)
_TOKEN = re.compile(r"(xy|t|z|c)(\d+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class NisIndices:
    """Loop indices as written in the name (NIS counts from 1); ``None`` when absent."""

    t: int | None = None
    xy: int | None = None
    z: int | None = None
    c: int | None = None


def stem_of(name: str) -> str:
    """The name without ``.ome.tif``/``.tif``/``.tiff``/``.nd2`` (case-insensitive)."""
    lower = name.lower()
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif", ".nd2"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def parse_indices(name: str) -> NisIndices:
    """Read the ``t``/``xy``/``z``/``c`` tokens at the end of a file name's stem."""
    run = _TOKEN_RUN.search(stem_of(name))
    if run is None:
        return NisIndices()
    found: dict[str, int] = {}
    for key, digits in _TOKEN.findall(run.group(0)):
        found.setdefault(key.lower(), int(digits))  # a repeated token keeps its first value
    return NisIndices(**found)
