"""Atomic TIFF writes for frames refocusd must keep (spooled raw frames)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from refocusd.config.files import atomic_path


def write_atomically(path: Path, pixels: np.ndarray, *, metadata: dict[str, Any]) -> Path:
    """Write ``pixels`` to ``path`` via a temporary file + fsync + rename."""
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, pixels, description=json.dumps(metadata), metadata=None)
    return path
