"""The pixel size (µm per pixel in the sample plane) that a frame's own metadata states.

Each source says it its own way; every reader here returns ``None`` rather than a guess
when the metadata does not say it (a TIFF's default 72 dpi is not a pixel size):

- Micro-Manager: ``PixelSizeUm`` in the image metadata (0 means "not calibrated");
- OME-XML (OME-TIFF, Micro-Manager's OME-TIFF): ``Pixels/@PhysicalSizeX`` (``Y`` if no X)
  in its ``PhysicalSizeXUnit`` (µm by default);
- NIS-Elements TIFF exports: ``dCalibration`` in the private XML tags 65330-65333;
- ND2: the file's voxel size (``nd2.ND2File.voxel_size()``);
- JSON descriptions (refocusd's simulated microscope): ``pixel_size_um``;
- TIFF resolution tags in centimetres or ImageJ ``unit=micron``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

_UNIT_UM = {"µm": 1.0, "um": 1.0, "micron": 1.0, "micrometer": 1.0, "nm": 1e-3, "mm": 1e3,
            "cm": 1e4, "m": 1e6, "å": 1e-4, "pm": 1e-6, "\\u00B5m": 1.0, "microns": 1.0}
_OME_PIXELS = re.compile(r"<(?:\w+:)?Pixels\b[^>]*>", re.S)
_NIS_CALIBRATION = re.compile(r"dCalibration\b[^>]*?value=\"([0-9.eE+-]+)\"|dCalibration\W+([0-9.eE+-]+)")


# Any: metadata values arrive as str, int, float, Fraction or None
def valid(value: Any) -> float | None:
    """``value`` as a plausible pixel size in µm (1 nm .. 1 mm), else None."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and 1e-3 <= number <= 1e3 else None


def from_micromanager(metadata: Mapping[str, Any] | None) -> float | None:
    if not metadata:
        return None
    for key in ("PixelSizeUm", "PixelSize_um"):
        if key in metadata:
            return valid(metadata[key])
    summary = metadata.get("Summary")
    return from_micromanager(summary) if isinstance(summary, Mapping) else None


def from_ome_xml(xml: str | None) -> float | None:
    if not xml:
        return None
    match = _OME_PIXELS.search(xml)
    if not match:
        return None
    tag = match.group(0)
    for axis in ("X", "Y"):
        size = re.search(rf'PhysicalSize{axis}="([^"]+)"', tag)
        if size:
            unit = re.search(rf'PhysicalSize{axis}Unit="([^"]+)"', tag)
            factor = _UNIT_UM.get((unit.group(1) if unit else "µm").strip().lower())
            try:
                return None if factor is None else valid(float(size.group(1)) * factor)
            except ValueError:
                return None
    return None


def from_nis_tags(tags: Mapping[str, str] | None) -> float | None:
    for text in (tags or {}).values():
        match = _NIS_CALIBRATION.search(text)
        if match:
            return valid(match.group(1) or match.group(2))
    return None


def from_description(text: str | None) -> float | None:
    """A JSON ``ImageDescription`` with ``pixel_size_um`` (refocusd), or ImageJ's."""
    if not text:
        return None
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except ValueError:
            return None
        if isinstance(data, dict):
            return valid(data.get("pixel_size_um")) or from_micromanager(data)
    return None


# Any/getattr: a tifffile.TiffFile, whose *_metadata attributes exist only for some formats
def from_tiff(tif: Any) -> float | None:
    """The pixel size a ``tifffile.TiffFile`` declares (first page), or None."""
    page = tif.pages.first
    mm = getattr(tif, "micromanager_metadata", None)
    if isinstance(mm, Mapping):
        found = from_micromanager(mm)
        if found:
            return found
    mm_tag = page.tags.get("MicroManagerMetadata") if hasattr(page, "tags") else None
    if mm_tag is not None and isinstance(mm_tag.value, Mapping | str):
        value = mm_tag.value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = {}
        found = from_micromanager(value)
        if found:
            return found
    found = from_ome_xml(getattr(tif, "ome_metadata", None))
    if found:
        return found
    nis: dict[str, str] = {}
    for code in (65330, 65331, 65332, 65333):
        tag = page.tags.get(code)
        if tag is not None:
            value = tag.value
            nis[str(code)] = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    found = from_nis_tags(nis)
    if found:
        return found
    found = from_description(getattr(page, "description", None))
    if found:
        return found
    return _from_resolution(tif, page)


# Any: tifffile's TiffFile and TiffPage (tifffile ships no type hints for them)
def _from_resolution(tif: Any, page: Any) -> float | None:
    tags = page.tags
    x_res = tags.get("XResolution")
    unit = tags.get("ResolutionUnit")
    if x_res is None or unit is None:
        return None
    num, den = x_res.value
    if not num or not den:
        return None
    per_unit = num / den
    # getattr: tifffile gives the unit as an enum or, in older versions, as an int
    unit_value = int(getattr(unit.value, "value", unit.value))
    if unit_value == 3:  # centimetre
        return valid(1e4 / per_unit)
    ij = getattr(tif, "imagej_metadata", None) or {}
    if unit_value == 1 and str(ij.get("unit", "")).lower() in ("micron", "um", "µm", "\\u00b5m"):
        return valid(1.0 / per_unit)
    return None


# Any/getattr: an nd2.ND2File; its voxel_size() fields vary between nd2 versions
def from_nd2(f: Any) -> float | None:
    """An open ``nd2.ND2File``'s x voxel size (µm), or None when uncalibrated."""
    try:
        voxel = f.voxel_size()
    except Exception:  # noqa: BLE001 - nd2 raises many types on files without calibration
        return None
    x = valid(getattr(voxel, "x", None))
    return None if x is None or x == 1.0 else x  # nd2 reports 1.0 for "not calibrated"


def pixel_size_from_file(path: Path) -> float | None:
    """The pixel size a TIFF or ND2 file states, or None (other formats, no metadata)."""
    suffix = Path(path).suffix.lower()
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                return from_tiff(tif)
        if suffix == ".nd2":
            import nd2

            with nd2.ND2File(path) as f:
                return from_nd2(f)
    except Exception:  # noqa: BLE001 - unreadable metadata is "unknown", the pixels decide
        return None
    return None
