"""Checks of what refocusd must be able to write, run before any model loads.

A read-only or misplaced folder would otherwise surface as a traceback seconds into the
start (after TensorFlow loaded), or as every job failing. ``refocusd config check`` runs
the same checks without creating anything; ``refocusd run`` creates the folders first.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from refocusd.config import ConfigError, Settings

#: The systemd unit's UMask=0027 (systemd/refocusd.service), applied by ``refocusd run``
#: outside systemd too: state, logs and outputs are not readable by every user.
SERVICE_UMASK = 0o027
STATE_DIR_MODE = 0o750  # the unit's StateDirectoryMode


def writable_problems(settings: Settings, *, create: bool) -> list[str]:
    """One line per folder or file refocusd cannot write, naming the setting."""
    s = settings.service
    problems = [
        _folder_problem("service.state_dir", s.state_dir, create=create, mode=STATE_DIR_MODE),
        _folder_problem("service.output_root", s.output_root, create=create),
    ]
    if settings.logging.file is not None:
        problems.append(_file_problem("logging.file", settings.logging.file, create=create))
    return [p for p in problems if p]


def check_writable(settings: Settings, *, source: str, create: bool) -> None:
    """Raise :class:`ConfigError` (exit 2) naming every path refocusd cannot write."""
    problems = writable_problems(settings, create=create)
    if problems:
        raise ConfigError(source, problems)
    if create:
        _make_private(settings.service.state_dir)


def _folder_problem(key: str, folder: Path, *, create: bool, mode: int = 0o777) -> str | None:
    if folder.exists() and not folder.is_dir():
        return f"{key}: {folder} is not a folder"
    if not folder.exists():
        blocker = _blocking_file(folder)
        if blocker is not None:
            return f"{key}: {folder} cannot be created: {blocker} is a file, not a folder"
        if not create:
            return _access_problem(key, folder, _nearest_existing(folder))
        try:
            folder.mkdir(parents=True, mode=mode, exist_ok=True)
        except OSError as exc:
            return f"{key}: {folder} cannot be created: {_cause(exc)}"
    if not create:
        return _access_problem(key, folder, folder)
    try:  # the real test: create and remove a file, as the service will
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".refocusd-write-check-"):
            pass
    except OSError as exc:
        return f"{key}: {folder} is not writable: {_cause(exc)}"
    return None


def _file_problem(key: str, path: Path, *, create: bool) -> str | None:
    if path.is_dir():
        return f"{key}: {path} is a folder, not a file"
    folder_problem = _folder_problem(key, path.parent, create=create)
    if folder_problem:
        return f"{key}: {path}: " + folder_problem.split(": ", 1)[1]
    if path.exists() and not os.access(path, os.W_OK):
        return f"{key}: {path} is not writable: permission denied"
    return None


def _access_problem(key: str, folder: Path, existing: Path) -> str | None:
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == folder else f"cannot be created in {existing}"
        cause = "read-only file system" if _read_only_fs(existing) else "permission denied"
        return f"{key}: {folder} {what}: {cause}"
    return None


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path("/")


def _blocking_file(path: Path) -> Path | None:
    for parent in path.parents:
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _cause(exc: OSError) -> str:
    if exc.errno == errno.EROFS:
        return "read-only file system"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    return exc.strerror or str(exc)


def _make_private(state_dir: Path) -> None:
    # Files from before this check (or made under another umask) lose their world bits too.
    for path in (state_dir, *state_dir.iterdir()):
        try:
            mode = stat.S_IMODE(path.lstat().st_mode)
            if not path.is_symlink() and mode & 0o007:
                path.chmod(mode & ~0o007)
        except OSError:
            continue  # not ours to change (another owner): the service still runs
