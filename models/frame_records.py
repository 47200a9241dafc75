"""What a labelled frame is, beyond its label: defocus, pixel size and domain.

``refocusd synth`` records them per file in ``manifest.json``; frames from anywhere else
have none of them (``None``: the defocus head is not trained on them, the pixel size is
the caller's or unknown)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from refocusd.models.datasets import ClassifierData

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class FrameInfo:
    path: Path
    label: int
    z_um: float | None
    pixel_size_um: float | None
    domain: str
    objective: str = ""
    depth_of_field_um: float | None = None


def manifest_records(root: Path) -> dict[str, dict[str, Any]]:
    """Per-file records of a synth manifest, by path relative to ``root`` (empty: none)."""
    path = Path(root) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("dataset.manifest_unreadable", path=str(path), error=str(exc))
        return {}
    items = data.get("items") if isinstance(data, dict) else None
    return {str(r["path"]): r for r in items or [] if isinstance(r, dict) and "path" in r}


def domain_of(record: dict[str, Any]) -> str:
    """A frame's domain, ``mode/specimen`` (manifests before Synth v1: positive phase
    contrast of spread cells)."""
    if record.get("mode"):
        return f"{record['mode']}/{record.get('specimen', '?')}"
    return f"positive_phase/{record.get('cell_type', 'spread')}"


def frame_infos(data: ClassifierData, frame_pixel_um: float | None = None) -> list[FrameInfo]:
    infos = []
    for folder in data.folders:
        records = manifest_records(folder.root)
        for path, label in zip(folder.paths, folder.labels, strict=True):
            rec = records.get(path.relative_to(folder.root).as_posix(), {})
            z = rec.get("z_um")
            pixel = rec.get("pixel_size_um", frame_pixel_um)
            dof = rec.get("depth_of_field_um")
            infos.append(FrameInfo(path, int(label), None if z is None else float(z),
                                   None if pixel is None else float(pixel),
                                   domain_of(rec) if rec else "unknown",
                                   str(rec.get("objective", "")),
                                   None if dof is None else float(dof)))
    return infos
