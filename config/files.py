"""Atomic, durable file writes: the one way refocusd replaces a file.

Every writer (reconstructions, health.json, model cards and weights, synthetic data, spooled
frames, operator alerts) writes to a hidden temporary name in the destination folder,
fsyncs it, renames it over the final name and fsyncs the folder. A reader never sees half a
file, and a crash leaves at most a temporary named ``.<name>.<12 hex>.tmp<suffix>``, which
:func:`stale_temporaries` finds again so its owner can remove it.

It lives in ``config/`` because every layer (models, drivers, daemon) already depends on it.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_TEMP_MARK = re.compile(r"\.[0-9a-f]{12}\.tmp")


def temp_name(final: Path, *, suffix: str = "") -> Path:
    """A hidden, unique name beside ``final`` (same folder: the rename stays atomic).

    ``suffix`` is appended after ``.tmp`` for writers that insist on an extension (Keras).
    """
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp{suffix}")


def stale_temporaries(final: Path) -> list[Path]:
    """Temporaries of ``final`` left by an interrupted write (see :func:`temp_name`)."""
    pattern = re.compile(re.escape(f".{final.name}") + _TEMP_MARK.pattern + r"[A-Za-z0-9.]*$")
    try:
        return sorted(p for p in final.parent.iterdir() if pattern.match(p.name))
    except OSError:  # the folder does not exist (yet): nothing left behind
        return []


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(directory: Path) -> None:
    """Make renames in ``directory`` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(final: Path, *, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to ``final``.

    On any error the temporary is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(final, suffix=suffix)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, final)
        fsync_dir(final.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(final: Path, data: bytes | str, *, encoding: str = "utf-8") -> Path:
    """Replace ``final`` with ``data`` atomically and durably; returns ``final``."""
    payload = data.encode(encoding) if isinstance(data, str) else data
    with atomic_path(final) as tmp, open(tmp, "xb") as fh:
        fh.write(payload)
    return Path(final)
