"""Reconstruction workers: threads over the durable SQLite job queue.

Jobs survive crashes in the ledger; a job found 'running' at start-up is queued again by
the service. The reconstructor is loaded on the first job, so start-up stays fast. With
the ``local`` backend it runs in this process (one thread is right for a CPU or one GPU);
with ``dask`` it is a :class:`~refocusd.daemon.output.dask_backend.DaskReconstructor` and one
thread per cluster worker thread keeps the cluster busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from refocusd.daemon.output.pipeline import reconstruct_and_write, remove_stale_temporaries
from refocusd.daemon.output.writer import DiskFull
from refocusd.daemon.state.ledger import Ledger, LedgerError
from refocusd.models import FrameReconstructor

log = structlog.get_logger("refocusd.worker")


class ReconstructionWorker:
    def __init__(
        self,
        *,
        ledger: Ledger,
        load_reconstructor: Callable[[], FrameReconstructor],
        output_root: Path,
        run_id: str,
        threads: int = 1,
        idle_wait_s: float = 0.2,
        disk_full_retry_s: float = 30.0,
    ) -> None:
        self._ledger = ledger
        self._load = load_reconstructor
        self._reconstructor: FrameReconstructor | None = None
        self._load_lock = threading.Lock()
        self._output_root = output_root
        self._run_id = run_id
        self._n_threads = threads
        self._idle_wait_s = idle_wait_s
        self._disk_full_retry_s = disk_full_retry_s
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._drain = threading.Event()
        self._count_lock = threading.Lock()
        self.done = 0
        self.failed = 0

    # -- thread control ---------------------------------------------------------------

    def start(self) -> None:
        """Clear what interrupted writes left under the output root, then start the threads."""
        remove_stale_temporaries(self._output_root)
        for i in range(self._n_threads):
            thread = threading.Thread(target=self._loop, name=f"reconstruction-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, *, drain: bool, timeout: float | None = None) -> None:
        """Stop after the current jobs; with ``drain`` first empty the queue."""
        if drain:
            self._drain.set()
        else:
            self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def alive(self) -> bool:
        """All worker threads are running (health checks and the systemd watchdog ask)."""
        return bool(self._threads) and all(thread.is_alive() for thread in self._threads)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self.run_once():
                continue
            if self._drain.is_set():
                return
            self._stop.wait(self._idle_wait_s)

    # -- one job ----------------------------------------------------------------------

    def run_once(self) -> bool:
        """Run one queued job; ``False`` when the queue is empty (or the ledger is busy)."""
        try:
            job = self._ledger.claim_job()
        except LedgerError as exc:
            # A locked or failing ledger is the machine's problem, not a job's: the thread
            # lives on and asks again (after the idle wait), and says so in the log.
            log.error("reconstruct.claim_failed", run_id=self._run_id, error=str(exc))
            return False
        if job is None:
            return False
        request = job.request
        jlog = log.bind(run_id=self._run_id, job_id=job.id, frame_id=job.frame_id, reason=job.reason,
                        source=request.source_uri, **request.coords)
        started = time.perf_counter()
        try:
            written = reconstruct_and_write(
                request,
                self._model(),
                output_root=self._output_root,
                reason=job.reason,
                run_id=self._run_id,
                parameters={"job_id": job.id, "attempt": job.attempts, "experiment": request.experiment},
            )
        except DiskFull as exc:
            # Not the job's fault: keep it queued (attempt not counted) and wait for space.
            error = str(exc)
            self._guarded(jlog, "release_job", lambda: self._ledger.release_job(job.id, error))
            jlog.error("reconstruct.disk_full", error=str(exc), output_root=str(self._output_root),
                       retry_in_s=self._disk_full_retry_s, queue_depth=self._queue_depth())
            self._stop.wait(self._disk_full_retry_s)
        except Exception as exc:  # noqa: BLE001 - one bad job must not kill the worker
            with self._count_lock:
                self.failed += 1
            error = f"{type(exc).__name__}: {exc}"
            self._guarded(jlog, "fail_job", lambda: self._ledger.fail_job(job.id, error))
            jlog.error("reconstruct.failed", attempt=job.attempts, max_attempts=job.max_attempts, error=str(exc))
        else:
            if not written.already_written:
                with self._count_lock:
                    self.done += 1
            self._guarded(jlog, "complete_job", lambda: self._ledger.complete_job(job.id, str(written.path)))
            if written.already_written:
                # Done by an earlier run that crashed before recording it: keep that output.
                jlog.info("reconstruct.done", output=str(written.path), already_written=True)
            else:
                jlog.info("reconstruct.done", output=str(written.path),
                          duration_s=round(time.perf_counter() - started, 3))
        return True

    def _queue_depth(self) -> int | None:
        try:
            return self._ledger.queue_depth()
        except LedgerError:
            return None

    def _guarded(self, jlog: structlog.typing.FilteringBoundLogger, op: str, call: Callable[[], object]) -> None:
        """Record a job's end in the ledger; if the ledger fails, the job stays ``running``
        and the next start queues it again (``requeue_running``): nothing is lost."""
        try:
            call()
        except LedgerError as exc:
            jlog.error("reconstruct.ledger_failed", op=op, error=str(exc))

    def _model(self) -> FrameReconstructor:
        with self._load_lock:  # several threads, one model
            if self._reconstructor is None:
                self._reconstructor = self._load()
            return self._reconstructor
