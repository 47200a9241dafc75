"""Service health: what the daemon writes to ``<state_dir>/health.json`` and how it is judged.

The daemon rewrites the file every ``[health] interval_s`` (atomically); ``refocusd status``
reads it together with the ledger. One function, :func:`problems`, decides what is
unhealthy, so the daemon's own log and ``status`` never disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

from refocusd.config.errors import RefocusdError
from refocusd.config.files import atomic_write
from refocusd.config.settings import HealthSettings

HEALTH_FILE = "health.json"
#: The file is stale (daemon hung or dead) after this many missed writes.
STALE_AFTER_INTERVALS = 3

State = Literal["starting", "running", "stopped"]


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    state: State
    pid: int
    written_at: float
    interval_s: float
    run_id: str = ""
    experiment: str = ""
    device: str = ""
    frames_processed: int = 0
    last_frame_at: float | None = None
    queue_depth: int = 0
    oldest_pending_job_at: float | None = None
    driver_up: bool | None = None  # None: the driver does not report its health
    driver_detail: str = ""
    worker_up: bool = True
    output_root: str = ""
    disk_free_bytes: int | None = None
    metrics_url: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)
    exit_reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def write_health(path: Path, snapshot: HealthSnapshot) -> None:
    """Write-then-rename: a reader never sees half a file."""
    atomic_write(path, json.dumps(snapshot.as_dict(), indent=1))


def read_health(path: Path) -> HealthSnapshot | None:
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise HealthFileError(f"cannot read {path}: {exc}") from None
    known = set(HealthSnapshot.__dataclass_fields__)
    return HealthSnapshot(**{k: v for k, v in data.items() if k in known})


class HealthFileError(RefocusdError, RuntimeError):
    """health.json exists but cannot be read."""

    label = "health file error"


def disk_free_bytes(path: Path) -> int | None:
    """Free bytes on the file system that holds ``path`` (or its nearest existing parent)."""
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError:
            return None
    return None


def refreshed(snapshot: HealthSnapshot, *, disk_free: int | None, queue_depth: int | None,
              oldest_pending_job_at: float | None) -> HealthSnapshot:
    """The daemon's last snapshot updated with what ``status`` can measure itself."""
    changes: dict[str, object] = {"oldest_pending_job_at": oldest_pending_job_at}
    if disk_free is not None:
        changes["disk_free_bytes"] = disk_free
    if queue_depth is not None:
        changes["queue_depth"] = queue_depth
    return replace(snapshot, **changes)


def problems(
    snapshot: HealthSnapshot | None,
    settings: HealthSettings,
    *,
    now: float | None = None,
    require_running: bool = False,
    pid_alive: bool | None = None,
) -> list[str]:
    """Reasons the service is unhealthy; empty when it is healthy.

    A daemon that stopped cleanly (plan completed, SIGTERM) or never ran is healthy unless
    ``require_running``; one whose file says running but is stale, or whose process is gone,
    is not.
    """
    now = time.time() if now is None else now
    if snapshot is None:
        return ["the daemon has never run with this state folder"] if require_running else []
    found: list[str] = []
    if snapshot.state == "stopped":
        if require_running:
            found.append(f"the daemon is not running (stopped: {snapshot.exit_reason or 'unknown'})")
    else:
        age = now - snapshot.written_at
        if pid_alive is False:
            found.append(f"the daemon (pid {snapshot.pid}) is gone without a clean stop")
        elif age > STALE_AFTER_INTERVALS * snapshot.interval_s:
            found.append(f"the daemon is not responding: health last written {age:.0f} s ago (pid {snapshot.pid})")
        if snapshot.driver_up is False:
            found.append(f"driver down: {snapshot.driver_detail or 'no detail'}")
        if not snapshot.worker_up:
            found.append("reconstruction worker dead")
    if snapshot.oldest_pending_job_at is not None:
        waiting = now - snapshot.oldest_pending_job_at
        if waiting > settings.queue_stuck_after_s:
            found.append(
                f"queue stuck: {snapshot.queue_depth} job(s), oldest waiting {waiting:.0f} s "
                f"(limit {settings.queue_stuck_after_s:.0f} s)"
            )
    min_free = settings.min_free_gb * 1e9
    if snapshot.disk_free_bytes is not None and snapshot.disk_free_bytes < min_free:
        found.append(
            f"disk nearly full: {snapshot.disk_free_bytes / 1e9:.2f} GB free on {snapshot.output_root} "
            f"(limit {settings.min_free_gb:g} GB)"
        )
    return found


def pid_alive(pid: int) -> bool | None:
    """Whether ``pid`` exists on this host (None: cannot tell, e.g. another user's process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True
