"""Read a Micro-Manager position list (``.pos``, the "Micro-Manager Property Map" JSON that
the Stage Position List window saves) into ``useq.Position`` objects."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import useq

from refocusd.drivers.base import DriverError


class PositionListError(DriverError):
    """The position list file is missing or not a Micro-Manager position list."""


def read_position_list(path: Path) -> list[useq.Position]:
    try:
        data = json.loads(Path(path).read_text("utf-8"))
        entries = data["map"]["StagePositions"]["array"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PositionListError(f"{path} is not a readable Micro-Manager position list: {exc!r}") from exc
    positions = []
    for i, entry in enumerate(entries):
        try:
            positions.append(_position(entry, i))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise PositionListError(f"{path}: position {i} is malformed ({exc!r})") from exc
    if not positions:
        raise PositionListError(f"{path} holds no positions")
    return positions


def _position(entry: dict[str, Any], index: int) -> useq.Position:
    xy_stage = _scalar(entry, "DefaultXYStage", "")
    z_stage = _scalar(entry, "DefaultZStage", "")
    x = y = z = None
    for device in entry["DevicePositions"]["array"]:
        name = device["Device"]["scalar"]
        values = [float(v) for v in device["Position_um"]["array"]]
        if len(values) == 2 and (name == xy_stage or not xy_stage):
            x, y = values
        elif len(values) == 1 and (name == z_stage or (not z_stage and z is None)):
            z = values[0]
    if x is None or y is None:
        raise ValueError("no XY stage position")
    return useq.Position(x=x, y=y, z=z, name=_scalar(entry, "Label", f"Pos{index}"))


def _scalar(entry: dict[str, Any], key: str, default: str) -> str:
    value = entry.get(key)
    return str(value["scalar"]) if isinstance(value, dict) and "scalar" in value else default
