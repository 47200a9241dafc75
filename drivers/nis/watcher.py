"""The watchdog observer on the export folder, kept alive, with scans to catch what it misses.

watchdog facts this module is built around (see DESIGN.md): files present at start give no
event, so the folder is scanned right after the observer starts; events get lost (inotify
queue overflow, SMB/NFS shares where inotify never fires), so the folder is rescanned every
``rescan_interval_s``; a polling observer dies silently when a share drops, so the observer
and its emitters are checked on every tick and restarted (then the folder is rescanned).
The watcher only reports candidate paths; deciding when a file is ready is :mod:`.settle`'s.
"""

from __future__ import annotations

import fnmatch
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Literal

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from refocusd.models.images import is_hidden

log = structlog.get_logger(__name__)

ObserverKind = Literal["native", "polling"]


class _Collect(FileSystemEventHandler):
    """Puts every file path an event names on a queue (the observer's thread → the driver's)."""

    def __init__(self, sink: queue.SimpleQueue[Path | None]) -> None:
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "deleted", "closed_no_write"):
            return
        if event.is_directory:
            if event.event_type in ("created", "moved"):
                self._sink.put(None)  # a folder arrived whole (moved in): rescan
            return
        path = event.dest_path if event.event_type == "moved" else event.src_path
        self._sink.put(Path(os.fsdecode(path)))


class FolderWatcher:
    def __init__(
        self,
        root: Path,
        *,
        observer: ObserverKind,
        poll_interval_s: float,
        patterns: tuple[str, ...],
    ) -> None:
        self.root = root
        self._kind = observer
        self._poll_interval_s = poll_interval_s
        self._patterns = tuple(p.lower() for p in patterns)
        self._events: queue.SimpleQueue[Path | None] = queue.SimpleQueue()
        self._observer: BaseObserver | None = None
        self._outage_logged = False
        self.restarts = 0

    # -- observer lifecycle --------------------------------------------------------------

    def start(self) -> bool:
        """Start the observer; False (logged) when the folder cannot be watched right now."""
        observer: BaseObserver = (
            PollingObserver(timeout=self._poll_interval_s) if self._kind == "polling" else Observer()
        )
        try:
            observer.schedule(_Collect(self._events), str(self.root), recursive=True)
            observer.start()
        except OSError as exc:
            # e.g. the inotify watch limit: the periodic rescans still find every file.
            if not self._outage_logged:
                log.error("watcher.unavailable", root=str(self.root), observer=self._kind, error=str(exc))
                self._outage_logged = True
            return False
        self._observer = observer
        self._outage_logged = False
        log.info("watcher.started", root=str(self.root), observer=self._kind)
        return True

    def alive(self) -> bool:
        """The observer thread and every emitter thread are running."""
        observer = self._observer
        if observer is None or not observer.is_alive():
            return False
        return all(emitter.is_alive() for emitter in observer.emitters) and bool(observer.emitters)

    def restart(self) -> bool:
        """Replace a dead observer; the caller rescans afterwards and retries with a backoff.

        Logged once per outage (``watcher.died``, ``watcher.unavailable``), not per retry.
        """
        if self._observer is not None:
            log.error("watcher.died", root=str(self.root), observer=self._kind)
            self.stop()
        if not self.root.is_dir():
            if not self._outage_logged:
                log.error("watcher.unavailable", root=str(self.root), observer=self._kind, error="folder not reachable")
                self._outage_logged = True
            return False
        if self.start():
            self.restarts += 1
            log.warning("watcher.restarted", root=str(self.root), observer=self._kind, restarts=self.restarts)
            return True
        return False

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # noqa: BLE001 - a dead observer may fail to stop; it is dropped anyway
            log.warning("watcher.stop_failed", error=f"{type(exc).__name__}: {exc}")

    # -- candidates ----------------------------------------------------------------------

    def wanted(self, path: Path) -> bool:
        """A file matching the patterns, not hidden below the root (the CLI's rule too)."""
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            relative = PurePath(path.name)
        if is_hidden(relative):
            return False
        name = path.name.lower()
        return any(fnmatch.fnmatchcase(name, p) for p in self._patterns)

    def events(self) -> tuple[list[Path], bool]:
        """Paths named by events since the last call, and whether a rescan was asked for."""
        paths: list[Path] = []
        rescan = False
        while True:
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return paths, rescan
            if item is None:
                rescan = True
            elif self.wanted(item):
                paths.append(item)

    def scan(self) -> Iterator[Path]:
        """Every wanted file under the root; symlinked folders are not entered."""
        started = time.perf_counter()
        found = 0
        stack = [self.root]
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except OSError as exc:
                log.warning("watcher.scan_failed", folder=str(folder), error=str(exc))
                continue
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if not entry.name.startswith("."):  # hidden folders hold no frames
                            stack.append(Path(entry.path))
                        continue
                except OSError:
                    continue
                path = Path(entry.path)
                if self.wanted(path):
                    found += 1
                    yield path
        elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
        log.debug("watcher.scanned", root=str(self.root), files=found, ms=elapsed_ms)
