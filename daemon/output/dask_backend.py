"""The ``dask`` reconstruction backend: the network runs on a Dask distributed cluster.

The daemon stays the source of truth: it claims jobs from its SQLite queue, reads the raw
frame, and writes the output with provenance; only pixels travel to a worker and back.

- The model travels too: :class:`ReconstructorPlugin` carries the model folder's bytes
  (card + weights, ~8 MB for the shipped default), so workers need no shared file system
  and cannot run a different model than the one the daemon checked. Each worker writes
  them to a private folder, verifies the SHA-256 against the card and loads the model
  once, at plugin set-up.
- A worker that dies mid-job: the scheduler reruns the task on another worker (its own
  ``allowed-failures`` policy). If that is exhausted, or the scheduler is lost, the call
  raises and the ledger counts a failed attempt, queuing the job again while attempts
  remain.

:class:`DaskReconstructor` implements :class:`~refocusd.models.api.FrameReconstructor`, so
the local worker loop and ``refocusd reconstruct`` use it unchanged; run several worker
threads to keep several cluster workers busy.
"""

from __future__ import annotations

import tempfile
import threading
from concurrent.futures import CancelledError
from pathlib import Path
from typing import Any

import numpy as np
import structlog
from distributed import Client, WorkerPlugin, get_worker
from distributed.comm.core import CommClosedError
from distributed.scheduler import KilledWorker

from refocusd.daemon.errors import BackendUnavailable
from refocusd.models import store
from refocusd.models.api import ModelError
from refocusd.models.card import ModelCard

log = structlog.get_logger(__name__)

PLUGIN_NAME = "refocusd-reconstructor"


class ReconstructorPlugin(WorkerPlugin):
    """Dask worker plugin: load the reconstructor once per worker process."""

    name = PLUGIN_NAME
    idempotent = False  # a new model (new bytes) must replace the old one

    def __init__(self, files: dict[str, bytes], *, device: str = "auto", intra_op_threads: int | None = 1):
        self.files = files
        self.device = device
        self.intra_op_threads = intra_op_threads
        self.reconstructor: Any = None  # Any: a Reconstructor, imported inside the worker (TensorFlow)
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def setup(self, worker: Any) -> None:  # Any: distributed passes its Worker (WorkerPlugin API)
        from refocusd.daemon.ops.logging import configure_logging
        from refocusd.models.runtime import configure_threads, load_reconstructor

        if not structlog.is_configured():  # else structlog's default prints debug lines
            configure_logging(level="info")
        # "One thread per worker" must hold inside TensorFlow too, or each worker's
        # matrix kernels would spread over every core and workers would fight.
        configure_threads(self.intra_op_threads)
        self._folder = tempfile.TemporaryDirectory(prefix="refocusd-model-")
        for name, data in self.files.items():
            (Path(self._folder.name) / name).write_bytes(data)
        self.reconstructor = load_reconstructor(self._folder.name, device=self.device)  # type: ignore[arg-type]
        log.info("dask.worker_ready", worker=getattr(worker, "address", "?"),  # getattr: a test worker has none
                 model=self.reconstructor.model_id, device=self.reconstructor.device.describe())

    def teardown(self, worker: Any) -> None:  # Any: as in setup()
        if self._folder is not None:
            self._folder.cleanup()


def _reconstruct_on_worker(pixels: np.ndarray) -> tuple[np.ndarray, str, str, str]:
    """Task body: runs inside a Dask worker. Returns (pixels, model_id, worker, device)."""
    worker = get_worker()
    plugin = worker.plugins.get(PLUGIN_NAME)
    if plugin is None or plugin.reconstructor is None:
        raise ModelError(f"worker {worker.address} has no refocusd reconstructor loaded")
    model = plugin.reconstructor
    return model.reconstruct(pixels), model.model_id, worker.address, model.device.describe()


def _cluster_threads(client: Client) -> int:
    return sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())


def model_files(spec: str | Path) -> tuple[dict[str, bytes], Any]:
    """The model folder's card and weights as bytes (verified here first), and its card."""
    folder = store.resolve(spec, "reconstructor")
    card = store.load_card(folder)
    weights = store.verify_weights(folder, card)
    return {store.CARD_FILE: (folder / store.CARD_FILE).read_bytes(), weights.name: weights.read_bytes()}, card


class DaskReconstructor:
    """A :class:`FrameReconstructor` whose network runs on a Dask cluster.

    ``reconstruct`` blocks until its frame comes back, and is safe to call from several
    threads at once (one call per cluster thread keeps the cluster busy).
    """

    def __init__(self, client: Client, card: ModelCard, *, device: str, overlap: int) -> None:
        self._client = client
        self._card = card
        self._device = device
        self.overlap = overlap
        self._last = threading.local()  # which worker ran this thread's last frame

    @classmethod
    def connect(
        cls,
        address: str,
        model: str | Path = "default",
        *,
        device: str = "auto",
        timeout_s: float = 10.0,
        intra_op_threads: int | None = 1,
    ) -> DaskReconstructor:
        """Connect to the scheduler at ``address`` and load ``model`` on every worker."""
        from refocusd.models import tiling

        files, card = model_files(model)
        try:
            client = Client(address, timeout=f"{timeout_s}s", set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise BackendUnavailable(f"cannot reach the Dask scheduler at {address}: {exc}") from exc
        try:
            client.register_plugin(ReconstructorPlugin(files, device=device, intra_op_threads=intra_op_threads))
        except Exception as exc:
            client.close()
            raise BackendUnavailable(
                f"the Dask workers at {address} could not load {card.model_id}: {type(exc).__name__}: {exc}"
            ) from exc
        log.info("dask.connected", scheduler=address, workers=len(client.scheduler_info()["workers"]),
                 threads=_cluster_threads(client), model=card.model_id)
        return cls(client, card, device=device, overlap=tiling.DEFAULT_OVERLAP)

    @property
    def model_id(self) -> str:
        return self._card.model_id

    @property
    def card(self) -> ModelCard:
        return self._card

    @property
    def threads(self) -> int:
        """Worker threads the cluster has now (how many frames it runs at once)."""
        return max(1, _cluster_threads(self._client))

    def parameters_for(self, height: int, width: int) -> dict[str, object]:
        return {"tile": "chosen by the worker (refocusd.models.tiling.choose_tile)", "overlap": self.overlap}

    @property
    def provenance(self) -> dict[str, object]:
        return {
            **self._card.identity(),
            "backend": "dask",
            "scheduler": self._client.scheduler.address,
            # getattr: threading.local attributes exist only after this thread's first frame
            "worker": getattr(self._last, "worker", None),
            "device": getattr(self._last, "device", f"dask:{self._device}"),
        }

    def reconstruct(self, pixels: np.ndarray) -> np.ndarray:
        future = self._client.submit(_reconstruct_on_worker, pixels, pure=False)
        try:
            restored, model_id, worker, device = future.result()
        except (KilledWorker, CancelledError, CommClosedError) as exc:
            # Workers kept dying on this frame, or the scheduler went away: the caller
            # (the ledger) counts an attempt and may queue the job again.
            raise BackendUnavailable(f"the Dask cluster lost this frame: {type(exc).__name__}: {exc}") from exc
        finally:
            future.release()
        if model_id != self.model_id:  # the plugin was replaced by another daemon's model
            raise ModelError(f"Dask worker {worker} ran {model_id}, not {self.model_id}")
        self._last.worker, self._last.device = worker, f"{device}@{worker}"
        return restored

    def close(self) -> None:
        self._client.close()
