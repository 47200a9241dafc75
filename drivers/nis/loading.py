"""The I/O for one ready file, done on the driver's prefetch thread: checks, hash, pixels.

Pure with respect to the driver's state: :func:`load_file` only looks at the file (and the
fingerprint table, read-only) and says what it found; the driver's own thread acts on it.
Files up to ``PREFETCH_MAX_BYTES`` are read whole here, so hashing and decoding overlap
the runner's classification of the previous file; larger TIFFs and ND2s are read page by
page later, so a huge stack never sits in memory at once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from refocusd.drivers.base import FrameUnreadable
from refocusd.drivers.nis.fingerprints import FileFingerprints, sha256_of
from refocusd.drivers.nis.readers import PagePixels, is_nd2, read_nd2, read_tiff

PREFETCH_MAX_BYTES = 64 * 2**20

LoadAction = Literal["read", "known", "refuse", "vanished", "not_ready", "symlink"]


@dataclass(slots=True)
class LoadedFile:
    """What was found about a ready file; ``pages`` is set when ``action == "read"``."""

    path: Path
    action: LoadAction
    reason: str | None = None
    size: int = -1
    mtime_ns: int = -1
    sha256: str | None = None
    pages: Iterator[PagePixels] | None = None


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (links resolved) lies under ``root``."""
    target, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([target, base]) == base


def load_file(path: Path, *, root: Path, fingerprints: FileFingerprints, max_frame_bytes: int) -> LoadedFile:
    try:
        if path.is_symlink():
            if not inside(path, root):
                return LoadedFile(path, "refuse", "symlink pointing outside the watched folder (not followed)")
            link = os.lstat(path)  # its target, inside the folder, is taken on its own
            return LoadedFile(path, "symlink", size=link.st_size, mtime_ns=link.st_mtime_ns)
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            # A FIFO or device named *.tif would block the reader forever.
            return LoadedFile(path, "refuse", "not a regular file")
        if fingerprints.unchanged(path, st.st_size, st.st_mtime_ns) is not None:
            return LoadedFile(path, "known", size=st.st_size, mtime_ns=st.st_mtime_ns)
        if st.st_size == 0:
            return LoadedFile(path, "not_ready", "empty file (0 bytes)")
        sha = sha256_of(path)
    except FileNotFoundError:
        return LoadedFile(path, "vanished")
    except PermissionError as exc:
        return LoadedFile(path, "refuse", f"permission denied: {exc.strerror}")
    except OSError as exc:
        return LoadedFile(path, "refuse", f"cannot read: {exc}")
    if is_nd2(path):
        pages = read_nd2(path, max_frame_bytes=max_frame_bytes)
    elif st.st_size > PREFETCH_MAX_BYTES:
        pages = read_tiff(path, max_frame_bytes=max_frame_bytes)
    else:
        pages = read_ahead(read_tiff(path, max_frame_bytes=max_frame_bytes))
    return LoadedFile(path, "read", size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, pages=pages)


def read_ahead(pages: Iterator[PagePixels]) -> Iterator[PagePixels]:
    """Read every page now; replay them, then any error, when iterated later."""
    read: list[PagePixels] = []
    error: Exception | None = None
    try:
        read.extend(pages)
    except (FrameUnreadable, OSError) as exc:
        error = exc
    return _replay(read, error)


def _replay(pages: list[PagePixels], error: Exception | None) -> Iterator[PagePixels]:
    yield from pages
    if error is not None:
        raise error
