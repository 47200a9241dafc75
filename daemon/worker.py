"""Reconstruction workers: threads over the durable SQLite job queue.

Jobs survive crashes in the ledger; a job found 'running' at start-up is queued again by
the service. The reconstructor is loaded on the first job, so start-up stays fast. With
the ``local`` backend it runs in this process (one thread is right for a CPU or one GPU);
with ``dask`` it is a :class:`~refocusd.daemon.dask_backend.DaskReconstructor` and one
thread per cluster worker thread keeps the cluster busy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import structlog
import tifffile

from refocusd.daemon.ledger import Job, Ledger
from refocusd.daemon.provenance import build_provenance, sha256_file
from refocusd.daemon.writer import DiskFull, OutputExists, reconstruction_path, write_reconstruction
from refocusd.models import FrameReconstructor, Verdict

log = structlog.get_logger("refocusd.worker")


class SourceUnavailable(RuntimeError):
    """The raw frame a job refers to cannot be read any more."""


def read_source(uri: str, page: int | None) -> np.ndarray:
    if uri.lower().endswith(".nd2"):
        return _read_nd2_frame(uri, page or 0)
    try:
        with tifffile.TiffFile(uri) as tif:
            return tif.pages[page or 0].asarray()
    except (OSError, ValueError, IndexError, tifffile.TiffFileError) as exc:
        raise SourceUnavailable(f"cannot read raw frame {uri} (page {page or 0}): {exc}") from exc


def _read_nd2_frame(uri: str, index: int) -> np.ndarray:
    import nd2

    # ``index`` is the plane: sequence index × channels + channel (see drivers/nis/readers.py).
    try:
        with nd2.ND2File(uri) as f:
            channels = 1 if f.is_rgb else int(f.sizes.get("C", 1))
            frame = f.read_frame(index // channels)
    except Exception as exc:  # noqa: BLE001 - the nd2 reader raises many types on bad files
        raise SourceUnavailable(f"cannot read raw frame {uri} (plane {index}): {exc}") from exc
    return frame if channels == 1 else frame[index % channels]


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
        """Run one queued job; ``False`` when the queue is empty."""
        job = self._ledger.claim_job()
        if job is None:
            return False
        jlog = log.bind(run_id=self._run_id, job_id=job.id, frame_id=job.frame_id, reason=job.reason,
                        source=job.payload.get("source_uri"), **job.payload.get("coords", {}))
        started = time.perf_counter()
        try:
            output = self._reconstruct(job)
        except OutputExists as exc:
            # Done by an earlier run that crashed before recording it: keep that output.
            self._ledger.complete_job(job.id, str(exc.path))
            jlog.info("reconstruct.done", output=str(exc.path), already_written=True)
        except DiskFull as exc:
            # Not the job's fault: keep it queued (attempt not counted) and wait for space.
            self._ledger.release_job(job.id, str(exc))
            jlog.error("reconstruct.disk_full", error=str(exc), output_root=str(self._output_root),
                       retry_in_s=self._disk_full_retry_s, queue_depth=self._ledger.queue_depth())
            self._stop.wait(self._disk_full_retry_s)
        except Exception as exc:  # noqa: BLE001 - one bad job must not kill the worker
            with self._count_lock:
                self.failed += 1
            self._ledger.fail_job(job.id, f"{type(exc).__name__}: {exc}")
            jlog.error("reconstruct.failed", attempt=job.attempts, max_attempts=job.max_attempts, error=str(exc))
        else:
            with self._count_lock:
                self.done += 1
            self._ledger.complete_job(job.id, str(output))
            jlog.info("reconstruct.done", output=str(output), duration_s=round(time.perf_counter() - started, 3))
        return True

    def _reconstruct(self, job: Job) -> Path:
        payload = job.payload
        source = Path(payload["source_uri"])
        root = payload.get("source_root")
        page = payload.get("source_page")
        out_path = reconstruction_path(
            source,
            source_root=Path(root) if root else None,
            output_root=self._output_root,
            tag=None if page is None else f"page{page:05d}",
        )
        if out_path.exists():
            raise OutputExists(out_path)
        pixels = read_source(str(source), page)
        reconstructor = self._model()
        started = time.perf_counter()
        restored = reconstructor.reconstruct(pixels)
        provenance = build_provenance(
            reason=job.reason,
            source_path=source,
            source_sha256=sha256_file(source),
            coords=payload.get("coords", {}),
            acquired_at=payload.get("acquired_at"),
            verdict=_verdict(payload.get("verdict")),
            reconstructor=reconstructor.provenance,
            parameters={
                "seconds": round(time.perf_counter() - started, 3),
                "job_id": job.id,
                "attempt": job.attempts,
                "experiment": payload.get("experiment"),
            },
            run_id=self._run_id,
            device=str(reconstructor.provenance.get("device", "cpu")),
        )
        return write_reconstruction(restored, out_path, provenance)

    def _model(self) -> FrameReconstructor:
        with self._load_lock:  # several threads, one model
            if self._reconstructor is None:
                self._reconstructor = self._load()
            return self._reconstructor


def _verdict(recorded: dict | None) -> Verdict | None:
    if not recorded:
        return None
    return Verdict(
        p_focused=float(recorded["p_focused"]),
        label=recorded["label"],
        model_id=str(recorded.get("model", "")),
        latency_s=0.0,
        defocus_um=_optional_float(recorded.get("defocus_um")),
        defocus_sigma_um=_optional_float(recorded.get("defocus_sigma_um")),
        pixel_size_um=_optional_float(recorded.get("pixel_size_um")),
    )


def _optional_float(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]
