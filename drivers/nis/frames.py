"""A NIS export page → a :class:`~refocusd.drivers.base.Frame` (coordinates, source, metadata)."""

from __future__ import annotations

from pathlib import Path

from refocusd.drivers.base import Coordinates, Frame, SourceRef
from refocusd.drivers.nis.names import parse_indices
from refocusd.drivers.nis.readers import PagePixels, is_nd2


def build_frame(
    path: Path, page: PagePixels, *, root: Path, mtime_ns: int, sha256: str, experiment: str = ""
) -> Frame:
    """NIS counts loop indices from 1 in names; Coordinates count from 0.

    A multi-page TIFF is a time stack of one position: its page adds to the time index.
    ND2 loop indices (``T``/``P``/``Z``), when the file has them, win over the name.
    The source key carries the content hash, so new content at the same path is a new frame.
    """
    idx = parse_indices(path.name)
    multi = int(page.metadata.get("pages", page.metadata.get("frames", 1)) or 1) > 1
    stack = multi and not is_nd2(path)
    t = (idx.t or 1) - 1 + (page.index if stack else 0)
    coords = Coordinates(
        position=int(page.loop.get("P", (idx.xy or 1) - 1)),
        t=int(page.loop.get("T", t)),
        z_index=int(page.loop.get("Z", (idx.z or 1) - 1)),
        channel=page.channel or ("" if idx.c is None else f"c{idx.c}"),
    )
    metadata = {
        **page.metadata,
        "relative_path": str(path.relative_to(root)),
        "sha256": sha256,
        "name_indices": {"t": idx.t, "xy": idx.xy, "z": idx.z, "c": idx.c},
    }
    if page.relative_time_s is not None:
        metadata["relative_time_s"] = page.relative_time_s
    if page.stage_um is not None:
        metadata["stage_um"] = list(page.stage_um)
    return Frame(
        pixels=page.pixels,
        coords=coords,
        source=SourceRef(uri=str(path), page=page.index if multi else None, version=sha256[:16]),
        # The file's mtime: NIS stamps no absolute time per page (ND2 times are relative).
        acquired_at=mtime_ns / 1e9,
        z_um=None if page.stage_um is None else page.stage_um[2],
        experiment=experiment,
        metadata=metadata,
        pixel_size_um=page.pixel_size_um,
    )
