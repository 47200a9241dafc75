"""Provenance of a reconstructed frame: why it was made, from what, with which model.

The record is a plain JSON-serialisable dict. The writer stores it twice: in full as a JSON
sidecar, and flattened (:func:`flatten`) as key/value pairs of an OME ``MapAnnotation``
inside the OME-TIFF, so the file keeps its history even when copied alone.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
import socket
import sys
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from refocusd.models.api import Verdict

#: Bump when keys are renamed or their meaning changes (additions keep the version).
PROVENANCE_SCHEMA = "refocusd.provenance/1"

_CHUNK = 1 << 20
# Distributions whose versions are recorded. TensorFlow ships under several names; the
# first one installed wins. Looked up in package metadata so TF is never imported here.
_SOFTWARE: dict[str, tuple[str, ...]] = {
    "refocusd": ("refocusd",),
    "numpy": ("numpy",),
    "tifffile": ("tifffile",),
    "ome-types": ("ome-types",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly"),
    "keras": ("keras",),
}


def sha256_file(path: Path | str) -> str:
    """SHA-256 hex digest of a file, read in 1 MiB chunks (frames can be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_array(pixels: np.ndarray) -> str:
    """SHA-256 of an array's pixels, for sources that are not files (simulated frames).

    Shape and dtype are hashed too, so the same bytes read as a different image differ.
    """
    arr = np.ascontiguousarray(pixels)
    digest = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    digest.update(memoryview(arr).cast("B"))
    return digest.hexdigest()


def software_versions() -> dict[str, str | None]:
    """Versions of the software that shaped the output (``None``: not installed)."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for key, dists in _SOFTWARE.items():
        versions[key] = None
        for dist in dists:
            try:
                versions[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    tf = sys.modules.get("tensorflow")  # the version actually running, when loaded
    # getattr: a module registered as "tensorflow" need not be TF proper (a lazy loader, a stub)
    if tf is not None and isinstance(getattr(tf, "__version__", None), str):
        versions["tensorflow"] = tf.__version__
    return versions


def utc_iso(epoch_s: float) -> str:
    """Epoch seconds as ISO 8601 UTC with microseconds, e.g. ``2026-01-01T00:00:00.000000Z``."""
    return datetime.fromtimestamp(epoch_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def build_provenance(
    *,
    reason: str,
    source_path: Path | str,
    source_sha256: str,
    coords: Mapping[str, Any],
    acquired_at: float | None,
    verdict: Verdict | None,
    reconstructor: Mapping[str, Any],
    parameters: Mapping[str, Any],
    run_id: str,
    device: str,
    created_at: float | None = None,
) -> dict[str, Any]:
    """Everything needed to judge (or redo) a reconstruction, as a JSON-ready dict.

    ``source_path`` may also be a driver URI (``sim://...``) for sources that are not files;
    ``created_at`` defaults to ``time.time()`` (pass the runner's clock for virtual time).
    """
    if not reason:
        raise ValueError("provenance needs a reason (why the frame was reconstructed)")
    if len(source_sha256) != 64 or any(c not in "0123456789abcdef" for c in source_sha256):
        raise ValueError(f"source_sha256 must be 64 lowercase hex digits, got {source_sha256!r}")
    created = time.time() if created_at is None else created_at
    record: dict[str, Any] = {
        "schema": PROVENANCE_SCHEMA,
        "reason": reason,
        "source": {
            "path": str(source_path),
            "sha256": source_sha256,
            "coordinates": dict(coords),
            "acquired_at": None if acquired_at is None else utc_iso(acquired_at),
            "acquired_at_epoch_s": acquired_at,
        },
        "classifier": None if verdict is None else verdict.as_dict(),
        "reconstructor": dict(reconstructor),
        "parameters": dict(parameters),
        "software": software_versions(),
        "host": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "pid": os.getpid(),
        },
        "device": device,
        "created_at": utc_iso(created),
        "run_id": run_id,
    }
    return _jsonable(record, "provenance")


def flatten(record: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Nested provenance as ``("source.sha256", "ab12...")`` pairs, in insertion order.

    Lists get their index as a key part (``parameters.tile.0``); ``None`` becomes ``""``
    because OME map values are strings.
    """
    return list(_flatten(record, ""))


def _flatten(value: object, prefix: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _flatten(item, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _flatten(item, f"{prefix}.{index}")
    elif value is None:
        yield prefix, ""
    elif isinstance(value, bool):
        yield prefix, "true" if value else "false"
    else:
        yield prefix, str(value)


def _jsonable(value: Any, where: str) -> Any:  # Any: arbitrary caller data in, JSON types out
    """A copy of ``value`` made of JSON types only; names the offending key otherwise."""
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where} is {value!r}; provenance values must be finite")
        return value
    if isinstance(value, np.generic):
        return _jsonable(value.item(), where)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray) and value.size <= 64:
        return _jsonable(value.tolist(), where)
    raise ValueError(f"{where} has a {type(value).__name__}, which is not JSON-serialisable")
