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

import numpy as np
import structlog
import tifffile

from refocusd.daemon.state.ledger import Job, Ledger
from refocusd.daemon.output.provenance import build_provenance, sha256_file
from refocusd.daemon.output.writer import DiskFull, OutputExists, reconstruction_path, write_reconstruction
from refocusd.models import FocusClassifier, FrameReconstructor, Verdict
from refocusd.models.quality import QualityRule, ReconstructionScore, score_reconstruction

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
        classifier: FocusClassifier | None = None,
        quality_rule: QualityRule | None = None,
        write_not_improved: bool = True,
    ) -> None:
        self._ledger = ledger
        # Scores every reconstruction against its input (None: unscored, e.g. a bare bench).
        self._classifier = classifier
        self._quality_rule = quality_rule or QualityRule()
        self._write_not_improved = write_not_improved
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
        self.not_improved = 0

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
            output, score = self._reconstruct(job)
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
            not_improved = score is not None and not score.improved
            with self._count_lock:
                self.done += 1
                self.not_improved += int(not_improved)
            self._ledger.complete_job(
                job.id, output, not_improved="; ".join(score.reasons) if not_improved else None
            )
            event = jlog.warning if not_improved else jlog.info
            event("reconstruct.done", output=None if output is None else str(output),
                  written=output is not None, duration_s=round(time.perf_counter() - started, 3),
                  **({"quality": None} if score is None else {
                      "quality": score.quality, "quality_reasons": list(score.reasons),
                      "p_focused_before": round(score.p_focused_before, 4),
                      "p_focused_after": round(score.p_focused_after, 4),
                      "defocus_um_before": score.as_dict()["defocus_um_before"],
                      "defocus_um_after": score.as_dict()["defocus_um_after"],
                      "sharpness_gain": round(score.sharpness_gain, 4)}))
        return True

    def _reconstruct(self, job: Job) -> tuple[Path | None, ReconstructionScore | None]:
        """Reconstruct, score and (unless it is not improved and such outputs are not
        wanted) write; the path is None when nothing was written."""
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
        seconds = round(time.perf_counter() - started, 3)
        verdict = _verdict(payload.get("verdict"))
        score = self._score(pixels, restored, verdict)
        written = score is None or score.improved or self._write_not_improved
        provenance = build_provenance(
            reason=job.reason,
            source_path=source,
            source_sha256=sha256_file(source),
            coords=payload.get("coords", {}),
            acquired_at=payload.get("acquired_at"),
            verdict=verdict,
            reconstructor=reconstructor.provenance,
            parameters={
                "seconds": seconds,
                "job_id": job.id,
                "attempt": job.attempts,
                "experiment": payload.get("experiment"),
            },
            run_id=self._run_id,
            device=str(reconstructor.provenance.get("device", "cpu")),
            quality=None if score is None else {
                **score.as_dict(), "written": written,
                "write_not_improved": self._write_not_improved,
            },
        )
        if not written:
            return None, score
        return write_reconstruction(restored, out_path, provenance), score

    def _score(self, before: np.ndarray, after: np.ndarray,
               verdict: Verdict | None) -> ReconstructionScore | None:
        if self._classifier is None:
            return None
        # The input's verdict from the ledger is reused when this classifier made it.
        reuse = verdict is not None and verdict.model_id == self._classifier.model_id
        return score_reconstruction(
            self._classifier, before, after, self._quality_rule,
            verdict_before=verdict if reuse else None,
            pixel_size_um=None if verdict is None else verdict.pixel_size_um,
        )

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
