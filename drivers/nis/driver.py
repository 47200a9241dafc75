"""The NIS-Elements export-folder driver: frames appear as NIS writes files, no stage control.

:meth:`NisExportFolder.frames` returns an iterator (not a generator) so that it can raise
:class:`~refocusd.drivers.base.FrameUnreadable` for one bad file and keep going: the runner
quarantines that file and asks for the next frame. Each tick it supervises the observer,
drains its events, stats the candidates (:mod:`.settle`), rescans when due and logs a
heartbeat. Ready files are hashed and read on a prefetch thread, at most
``PREFETCH_DEPTH`` files ahead of the runner (:mod:`.loading`), so a burst of thousands of
files holds paths in memory, and the pixels of two files at most.

A file's fingerprint (path, size, mtime, SHA-256) is remembered only once the runner has
come back for the next frame, i.e. after the file's frames were recorded: a SIGKILL in
between means the file is read again on restart and the ledger's unique source keys (which
carry the content hash) turn its frames into duplicates: each frame counts once.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path

import structlog

from refocusd.config.settings import NisSettings
from refocusd.drivers.base import Capabilities, DriverHealth, Frame, FrameUnreadable, SourceRef
from refocusd.drivers.nis.alert import OperatorAlert
from refocusd.drivers.nis.fingerprints import FileFingerprints, name_is_utf8, path_text
from refocusd.drivers.nis.frames import build_frame
from refocusd.drivers.nis.loading import LoadedFile, load_file
from refocusd.drivers.nis.readers import FileNotReady, PagePixels
from refocusd.drivers.nis.settle import SettleTracker
from refocusd.drivers.nis.watcher import FolderWatcher

log = structlog.get_logger(__name__)

TICK_S = 0.05  # how often candidates are stat'ed: bounds the latency added to settle_s
RESTART_BACKOFF_S = 1.0  # between attempts to restart the observer while the folder is away
PREFETCH_DEPTH = 2  # files read ahead of the runner (memory: depth × file size)

@dataclass(slots=True)
class _OpenFile:
    """The file whose frames are being yielded."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str
    pages: Iterator[PagePixels]
    yielded: int = 0


class NisExportFolder:
    """Microscope over a NIS-Elements export folder (HealthReporting, StopAware, OutcomeAware)."""

    capabilities = Capabilities(move_stage=False, autofocus=False, reacquire=False)

    def __init__(
        self,
        settings: NisSettings,
        *,
        fingerprints: FileFingerprints,
        experiment: str = "",
        stop: threading.Event | None = None,
    ) -> None:
        self.settings = settings
        self.root = Path(os.path.abspath(settings.watch_dir))
        self._fingerprints = fingerprints
        self._experiment = experiment
        self._stop = stop or threading.Event()
        self._settle = SettleTracker(settings.settle_s, settings.give_up_s)
        self._watcher = FolderWatcher(
            self.root,
            observer=settings.observer,
            poll_interval_s=settings.poll_interval_s,
            patterns=tuple(settings.patterns),
        )
        self._max_frame_bytes = int(settings.max_frame_mb * 2**20)
        self._alert = OperatorAlert(settings.alert_command, settings.alert_request_dir)
        self._last_frame: Frame | None = None  # the frame the runner is deciding about
        self._ready: deque[Path] = deque()
        # Files are hashed and read one ahead on this thread while the runner classifies.
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nis-read")
        self._loading: deque[Future[LoadedFile]] = deque()
        self._bad: deque[tuple[FrameUnreadable, Path, int, int]] = deque()
        self._after_consumer: list[tuple[Path, int, int, str | None, str, str | None]] = []
        self._current: _OpenFile | None = None
        # Files taken in this process, by (size, mtime): rescans skip them without SQL.
        self._taken: dict[Path, tuple[int, int]] = {}
        self._started = False
        self._last_tick = 0.0
        self._next_rescan = 0.0
        self._next_heartbeat = 0.0
        self._next_restart = 0.0
        self._last_activity = time.monotonic()
        self.files_processed = 0
        self.files_quarantined = 0

    # -- Microscope ------------------------------------------------------------------------

    def bind_stop(self, stop: threading.Event) -> None:
        self._stop = stop

    def frames(self) -> Iterator[Frame]:
        return _FrameStream(self)

    def observe_outcome(
        self, source_key: str, label: str | None, outcome: str, p_focused: float | None = None
    ) -> None:
        """Alert the operator about a defocused frame (the runner calls this right after it)."""
        frame = self._last_frame
        if label != "defocused" or frame is None or frame.source.key != source_key or not self._alert.enabled:
            return
        self._alert.defocused(frame, label=label, outcome=outcome, p_focused=p_focused)

    def close(self) -> None:
        self._reader.shutdown(wait=True, cancel_futures=True)
        self._watcher.stop()
        self._fingerprints.close()
        self._alert.reap()

    def health(self) -> DriverHealth:
        if not self._started:
            # The service reports health once before the runner's first frame request, which
            # starts the watch: that moment is not an outage (no false alarm after a restart).
            return DriverHealth(up=False, detail=f"the watch on {self.root} starts with the first frame request",
                                starting=True)
        problem = self._watcher.problem()
        if not problem:
            return DriverHealth(up=True, detail=f"watching {self.root} ({self.settings.observer})")
        return DriverHealth(up=False, detail=problem)

    # -- the loop ------------------------------------------------------------------------

    def next_frame(self) -> Frame:
        """The next frame of a ready file; waits for one; StopIteration on stop or idle."""
        if not self._started:
            self._start()
        self._commit_handed_over()
        while True:
            if self._stop.is_set():
                raise StopIteration
            if self._bad:
                exc, path, size, mtime_ns = self._bad.popleft()
                self._after_consumer.append((path, size, mtime_ns, None, "quarantined", exc.reason))
                raise exc
            if self._current is not None:
                frame = self._advance_current()
                if frame is not None:
                    return frame
                continue
            if time.monotonic() - self._last_tick >= TICK_S:
                self._tick()
            self._prefetch()
            if self._loading:
                try:
                    loaded = self._loading[0].result(timeout=TICK_S)
                except FutureTimeout:
                    continue  # still reading: tick, and look at stop, meanwhile
                self._loading.popleft()
                self._open(loaded)
                self._prefetch()
                continue
            if self._idle_expired():
                log.info("watcher.idle_exit", idle_s=self.settings.exit_when_idle_s)
                raise StopIteration
            self._stop.wait(TICK_S)

    def _commit_handed_over(self) -> None:
        """The runner came back: what was handed over before is in the ledger; remember it."""
        for path, size, mtime_ns, sha, status, reason in self._after_consumer:
            self._fingerprints.remember(path, size, mtime_ns, sha, status, reason)  # type: ignore[arg-type]
        self._after_consumer.clear()

    def _start(self) -> None:
        # Observer first, then the scan: a file created in between is seen by one or the other.
        # A folder that is not there yet is waited for (the tick retries, logged once).
        if self.root.is_dir() and self._watcher.start():
            self._rescan()
        self._started = True
        self._next_heartbeat = time.monotonic() + self.settings.heartbeat_s

    def _tick(self) -> None:
        now = time.monotonic()
        self._last_tick = now
        if not self._watcher.alive() and now >= self._next_restart:
            if self._watcher.restart():
                self._rescan()
            else:
                self._next_restart = now + RESTART_BACKOFF_S
        paths, rescan = self._watcher.events()
        for path in paths:
            self._consider(path)
        if rescan or now >= self._next_rescan:
            self._rescan()
        result = self._settle.poll()
        for path in result.vanished:
            self._vanished(path)
        for path, reason in result.given_up:
            self._quarantine_file(path, reason)
        for path in result.ready:
            if not name_is_utf8(path):
                self._refuse_name(path)
                continue
            self._settle.hold(path)
            self._ready.append(path)
        if now >= self._next_heartbeat:
            self._next_heartbeat = now + self.settings.heartbeat_s
            log.info(
                "watcher.heartbeat",
                alive=self._watcher.alive(),
                observer=self.settings.observer,
                pending=len(self._settle),
                ready=len(self._ready),
                files_processed=self.files_processed,
                files_quarantined=self.files_quarantined,
                restarts=self._watcher.restarts,
            )

    def _rescan(self) -> None:
        self._next_rescan = time.monotonic() + self.settings.rescan_interval_s
        present: set[Path] = set()
        for path in self._watcher.scan():
            present.add(path)
            self._consider(path)
        # Forget files no longer there: memory follows the folder, not the daemon's uptime.
        self._taken = {p: v for p, v in self._taken.items() if p in present}

    def _consider(self, path: Path) -> None:
        """Track ``path`` unless it is tracked, or was taken as it is now."""
        if path in self._settle or (self._current is not None and self._current.path == path):
            return
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return  # gone already; nothing to take
        if self._taken.get(path) == (st.st_size, st.st_mtime_ns):
            return
        self._settle.offer(path)

    def _idle_expired(self) -> bool:
        limit = self.settings.exit_when_idle_s
        if limit is None or len(self._settle) or self._ready or self._loading:
            return False
        return time.monotonic() - self._last_activity >= limit

    # -- one file --------------------------------------------------------------------------

    def _prefetch(self) -> None:
        """Keep the prefetch thread busy with the next ready files (bounded: PREFETCH_DEPTH)."""
        while self._ready and len(self._loading) < PREFETCH_DEPTH:
            path = self._ready.popleft()
            self._loading.append(self._reader.submit(
                load_file, path, root=self.root, fingerprints=self._fingerprints, max_frame_bytes=self._max_frame_bytes
            ))

    def _open(self, loaded: LoadedFile) -> None:
        """Act on a loaded file: skip it, quarantine it, or start yielding its frames."""
        self._last_activity = time.monotonic()
        path = loaded.path
        flog = log.bind(path=str(path))
        if loaded.action == "refuse":
            self._quarantine_file(path, loaded.reason or "unreadable")
        elif loaded.action == "vanished":
            self._vanished(path)
        elif loaded.action == "not_ready":
            self._settle.not_ready(path, loaded.reason or "not ready")
        elif loaded.action == "symlink":
            flog.info("nis.file.symlink_skipped", target=os.path.realpath(path))
            self._mark_taken(path, loaded.size, loaded.mtime_ns)  # not again at every rescan
        elif loaded.action == "known":
            flog.debug("nis.file.already_taken")
            self._mark_taken(path, loaded.size, loaded.mtime_ns)
        else:
            sha = loaded.sha256
            assert sha is not None and loaded.pages is not None
            if self._already_seen_content(path, loaded.size, loaded.mtime_ns, sha, flog):
                return
            previous = self._fingerprints.get(path)
            if previous is not None and previous.sha256 not in (None, sha):
                flog.warning("nis.file.replaced", old_sha256=previous.sha256, new_sha256=sha)
            self._current = _OpenFile(path, loaded.size, loaded.mtime_ns, sha, loaded.pages)

    def _already_seen_content(self, path: Path, size: int, mtime_ns: int, sha: str, flog) -> bool:
        """Same content as a file taken before: a rename or move (or a copy), not a new frame."""
        earlier = self._fingerprints.paths_with(sha)
        if not earlier:
            return False
        if str(path) in earlier:
            flog.info("nis.file.touched", detail="mtime changed, content identical; not processed again")
        else:
            # Identical pixels at a path that still exists are another acquired point (two
            # blank or saturated fields, a copy): a new frame. Only content whose earlier path
            # is gone was moved or renamed; that path is marked so no later file is taken
            # for a move from it too.
            moved_from = next((p for p in earlier if not os.path.exists(p)), None)
            if moved_from is None:
                flog.info("nis.file.same_content", same_as=earlier[0], sha256=sha,
                          detail="identical pixels at another path: recorded as a new frame")
                return False
            flog.info("nis.file.moved", moved_from=moved_from, sha256=sha)
            self._fingerprints.remember(Path(moved_from), -1, -1, sha, "moved")
        self._fingerprints.remember(path, size, mtime_ns, sha, "processed")
        self._mark_taken(path, size, mtime_ns)
        return True

    def _advance_current(self) -> Frame | None:
        current = self._current
        assert current is not None
        try:
            page = next(current.pages)
        except StopIteration:
            self._finish_current()
            return None
        except FileNotReady as exc:
            self._current = None
            if current.yielded == 0:
                self._settle.not_ready(current.path, exc.reason)
                return None
            self._quarantine_file(current.path, exc.reason, sha=current.sha256, first_page=current.yielded)
            return None
        except FrameUnreadable as exc:
            self._current = None
            self._quarantine_file(current.path, exc.reason, sha=current.sha256, first_page=current.yielded)
            return None
        except FileNotFoundError:
            self._current = None
            if current.yielded:  # part of it is in the ledger: the rest is missing, say so
                self._quarantine_file(current.path, "file deleted while it was being read",
                                      sha=current.sha256, first_page=current.yielded)
            else:
                self._vanished(current.path)
            return None
        except PermissionError as exc:
            self._current = None
            self._quarantine_file(current.path, f"permission denied: {exc.strerror}")
            return None
        except OSError as exc:
            self._current = None
            self._quarantine_file(current.path, f"cannot read: {exc}", sha=current.sha256, first_page=current.yielded)
            return None
        current.yielded += 1
        self._last_frame = build_frame(
            current.path, page, root=self.root, mtime_ns=current.mtime_ns, sha256=current.sha256,
            experiment=self._experiment,
        )
        return self._last_frame

    def _finish_current(self) -> None:
        """All frames of the file were handed over and recorded: remember the file."""
        current = self._current
        assert current is not None
        self._current = None
        try:
            st = current.path.stat()
            changed = (st.st_size, st.st_mtime_ns) != (current.size, current.mtime_ns)
        except FileNotFoundError:
            changed = False  # read in full before it went; what was read stands
        if changed:
            # Written to while being read: take it again once it settles.
            log.warning("nis.file.changed_while_reading", path=str(current.path))
            self._settle.forget(current.path)
            self._settle.offer(current.path)
            return
        # Called when the runner asks for the frame after the file's last one: recorded.
        self._fingerprints.remember(current.path, current.size, current.mtime_ns, current.sha256, "processed")
        self._mark_taken(current.path, current.size, current.mtime_ns)
        self.files_processed += 1
        log.info("nis.file.taken", path=str(current.path), frames=current.yielded, sha256=current.sha256)

    # -- bad files -------------------------------------------------------------------------

    def _quarantine_file(self, path: Path, reason: str, *, sha: str | None = None, first_page: int = 0) -> None:
        """Queue the file to be raised to the runner as FrameUnreadable (it records and logs it)."""
        try:
            st = os.stat(path, follow_symlinks=False)
            size, mtime_ns = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime_ns = -1, -1
        self._mark_taken(path, size, mtime_ns)
        self.files_quarantined += 1
        log.warning("nis.file.refused", path=path_text(path), reason=reason)
        version = sha[:16] if sha else f"{size}-{mtime_ns}"
        exc = FrameUnreadable(reason, source=SourceRef(uri=path_text(path), page=first_page or None, version=version))
        self._bad.append((exc, path, size, mtime_ns))

    def _refuse_name(self, path: Path) -> None:
        # Its name cannot be recorded as text (ledger, logs, provenance): refuse it once it
        # settled, saying how to fix it, instead of failing on it at every start.
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            self._vanished(path)
            return
        if self._fingerprints.unchanged(path, st.st_size, st.st_mtime_ns) is not None:
            self._mark_taken(path, st.st_size, st.st_mtime_ns)  # refused before this restart
            return
        self._quarantine_file(path, f"file name is not valid UTF-8 ({path_text(path.name)}); "
                                    "rename it to have it processed")

    def _vanished(self, path: Path) -> None:
        # Gone before a page of it was read: a temporary name of the write-then-rename
        # pattern (the final name is taken on its own), or a file deleted at once. Neither
        # is an acquired frame, so nothing goes into the ledger.
        self._settle.forget(path)
        self._taken.pop(path, None)
        log.info("nis.file.vanished", path=path_text(path),
                 detail="gone before it could be read (a temporary name?); nothing recorded")

    def _mark_taken(self, path: Path, size: int, mtime_ns: int) -> None:
        self._settle.forget(path)
        self._taken[path] = (size, mtime_ns)


class _FrameStream:
    """Iterator over the driver's frames that survives a FrameUnreadable (see module doc)."""

    def __init__(self, driver: NisExportFolder) -> None:
        self._driver = driver

    def __iter__(self) -> _FrameStream:
        return self

    def __next__(self) -> Frame:
        return self._driver.next_frame()
