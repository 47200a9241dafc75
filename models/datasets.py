"""Training/evaluation data folders: discovery, validation, image reading, seeded splits.

Two layouts, both written by ``refocusd synth`` and by users from their own microscopes:

- classifier: ``DIR/focused/`` and ``DIR/defocused/`` holding TIFF/PNG/JPEG frames;
- reconstructor: ``DIR/input/`` (defocused) and ``DIR/target/`` (focused) with identical
  file names, one pair per name.

A malformed folder raises :class:`DatasetError` (a :class:`ModelError`, so the CLI turns it
into one clear message and exit status 2). No TensorFlow here.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

from refocusd.models.api import ModelError
from refocusd.models.frame_checks import InvalidFrame
from refocusd.models.images import IMAGE_SUFFIXES, UnreadableImage, is_image_file, read_plane

log = structlog.get_logger(__name__)

FOCUSED, DEFOCUSED = 0, 1  # class indices: the SDCNN's softmax index 0 is "focused"
CLASS_FOLDERS = ("focused", "defocused")
PAIR_FOLDERS = ("input", "target")
MANIFEST_NAME = "manifest.json"
_MANIFEST_INLINE_LIMIT = 2_000  # characters; longer lists (per-file records) are counted


class DatasetError(ModelError):
    """A data folder is missing, empty, mis-paired or holds an unreadable image."""

    label = "data error"


def read_image(path: Path) -> np.ndarray:
    """One 2-D frame as ``(H, W)`` or ``(H, W, 3)``, in the file's own dtype.

    Read by the one image reader (:func:`refocusd.models.images.read_plane`) with the one
    set of frame rules; a file of several planes (a z-stack, a time series) is rejected
    because a training sample is one frame.
    """
    try:
        return read_plane(path, page=None)
    except (UnreadableImage, InvalidFrame) as exc:
        raise DatasetError(f"unreadable image {path}: {exc}") from exc


def list_images(folder: Path) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name (hidden files skipped)."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and is_image_file(p)
    )


def _require_subfolder(root: Path, name: str, layout: str) -> Path:
    if not root.exists():
        raise DatasetError(f"data folder {root} does not exist")
    if not root.is_dir():
        raise DatasetError(f"data folder {root} is not a folder")
    sub = root / name
    if not sub.is_dir():
        raise DatasetError(f"data folder {root} has no '{name}/' subfolder (expected {layout})")
    return sub


def _read_manifest(root: Path) -> dict[str, Any] | None:
    """The folder's ``manifest.json`` for a card: its settings and SHA-256, without the
    per-file records (which can run to megabytes), or ``None`` when there is none."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        raw = path.read_bytes()
        data = json.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        log.warning("dataset.manifest_unreadable", path=str(path), error=str(exc))
        return {"unreadable": str(path)}
    summary: dict[str, Any] = {"sha256": hashlib.sha256(raw).hexdigest()}
    if not isinstance(data, dict):
        return summary
    for key, value in data.items():
        if isinstance(value, list) and len(json.dumps(value)) > _MANIFEST_INLINE_LIMIT:
            summary[f"{key}_count"] = len(value)  # per-file records: counted, not copied
        else:
            summary[key] = value
    return summary


@dataclass(frozen=True, slots=True)
class ClassifierFolder:
    """A validated ``focused/`` + ``defocused/`` folder."""

    root: Path
    focused: tuple[Path, ...]
    defocused: tuple[Path, ...]
    manifest: dict[str, Any] | None

    @property
    def paths(self) -> list[Path]:
        return [*self.focused, *self.defocused]

    @property
    def labels(self) -> np.ndarray:
        return np.array([FOCUSED] * len(self.focused) + [DEFOCUSED] * len(self.defocused))

    def describe(self) -> dict[str, Any]:
        """What a model card records about the data it was trained or evaluated on."""
        return {
            "folder": str(self.root.resolve()),
            "layout": "classifier",
            "counts": {"focused": len(self.focused), "defocused": len(self.defocused)},
            "manifest": self.manifest,
        }


@dataclass(frozen=True, slots=True)
class ClassifierData:
    """One or more classifier folders trained on together (e.g. several frame sizes)."""

    folders: tuple[ClassifierFolder, ...]

    @property
    def paths(self) -> list[Path]:
        return [p for f in self.folders for p in f.paths]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([f.labels for f in self.folders])

    @property
    def n_focused(self) -> int:
        return sum(len(f.focused) for f in self.folders)

    @property
    def n_defocused(self) -> int:
        return sum(len(f.defocused) for f in self.folders)

    def describe(self) -> dict[str, Any]:
        if len(self.folders) == 1:
            return self.folders[0].describe()
        return {
            "layout": "classifier",
            "counts": {"focused": self.n_focused, "defocused": self.n_defocused},
            "folders": [f.describe() for f in self.folders],
        }


def scan_classifier_folders(roots: Sequence[Path | str] | Path | str) -> ClassifierData:
    """:func:`scan_classifier_folder` for each root (a single path is accepted too)."""
    if isinstance(roots, str | Path):
        roots = [roots]
    if not roots:
        raise DatasetError("no data folder given")
    return ClassifierData(tuple(scan_classifier_folder(r) for r in roots))


@dataclass(frozen=True, slots=True)
class PairedFolder:
    """A validated ``input/`` + ``target/`` folder, paired by file name."""

    root: Path
    names: tuple[str, ...]
    manifest: dict[str, Any] | None

    def input_path(self, name: str) -> Path:
        return self.root / "input" / name

    def target_path(self, name: str) -> Path:
        return self.root / "target" / name

    def read_pair(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(defocused input, focused target); shapes must agree."""
        source, target = read_image(self.input_path(name)), read_image(self.target_path(name))
        if source.shape != target.shape:
            raise DatasetError(
                f"pair {name!r} in {self.root}: input shape {source.shape} differs from "
                f"target shape {target.shape}"
            )
        return source, target

    def describe(self) -> dict[str, Any]:
        return {
            "folder": str(self.root.resolve()),
            "layout": "reconstructor",
            "counts": {"pairs": len(self.names)},
            "manifest": self.manifest,
        }


def scan_classifier_folder(root: Path | str) -> ClassifierFolder:
    """Validate the layout and list the images (does not decode them)."""
    root = Path(root)
    layout = "focused/ and defocused/ with TIFF/PNG/JPEG images"
    lists = [list_images(_require_subfolder(root, name, layout)) for name in CLASS_FOLDERS]
    for name, files in zip(CLASS_FOLDERS, lists, strict=True):
        if not files:
            raise DatasetError(
                f"data folder {root}: '{name}/' holds no images "
                f"(looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
            )
    folder = ClassifierFolder(root, tuple(lists[0]), tuple(lists[1]), _read_manifest(root))
    log.info(
        "dataset.scanned",
        layout="classifier",
        folder=str(root),
        focused=len(folder.focused),
        defocused=len(folder.defocused),
    )
    return folder


def scan_paired_folder(root: Path | str) -> PairedFolder:
    """Validate the layout; every input must have a target of the same name and vice versa."""
    root = Path(root)
    layout = "input/ and target/ with identically named TIFF/PNG/JPEG images"
    inputs, targets = (
        {p.name for p in list_images(_require_subfolder(root, name, layout))}
        for name in PAIR_FOLDERS
    )
    if not inputs:
        raise DatasetError(f"data folder {root}: 'input/' holds no images")
    if not targets:
        raise DatasetError(f"data folder {root}: 'target/' holds no images")
    unpaired = sorted(inputs ^ targets)
    if unpaired:
        shown = ", ".join(unpaired[:5]) + (" ..." if len(unpaired) > 5 else "")
        raise DatasetError(
            f"data folder {root}: {len(unpaired)} image(s) lack a partner of the same name "
            f"in input/ and target/: {shown}"
        )
    folder = PairedFolder(root, tuple(sorted(inputs)), _read_manifest(root))
    log.info("dataset.scanned", layout="reconstructor", folder=str(root), pairs=len(folder.names))
    return folder


def split_indices(
    labels: Sequence[int] | np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic, stratified train/validation split of ``range(len(labels))``.

    Each class keeps ``val_fraction`` of its members (at least one when it has two or more),
    so a small folder still validates on both classes. Pass one label for unlabelled pairs.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise DatasetError(f"validation fraction must be in [0, 1), got {val_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for value in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == value))
        n_val = int(round(val_fraction * len(members)))
        if val_fraction > 0 and len(members) >= 2:
            n_val = min(max(n_val, 1), len(members) - 1)
        val.append(members[:n_val])
        train.append(members[n_val:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(val))
