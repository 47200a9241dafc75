"""The reconstruction worker on a real ledger, real files and the shipped reconstructor:
what an interrupted write left is cleared (issue #14 item 3), and a failing ledger call
never ends the worker thread (item 11)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from structlog.testing import capture_logs

from refocusd.daemon.output.pipeline import output_path
from refocusd.daemon.output.worker import ReconstructionWorker
from refocusd.daemon.output.writer import sidecar_path
from refocusd.daemon.state.jobs import ReconstructionRequest
from refocusd.daemon.state.ledger import FrameRecord, Ledger
from refocusd.models.runtime import load_reconstructor


@pytest.fixture(scope="module")
def reconstructor():
    return load_reconstructor("default", device="cpu")


def queue_one(ledger: Ledger, source: Path, root: Path) -> tuple[int, ReconstructionRequest]:
    tifffile.imwrite(source, np.random.default_rng(0).integers(0, 255, (48, 48), dtype=np.uint8))
    request = ReconstructionRequest(source_uri=str(source), source_root=str(root))
    record = FrameRecord(run_id="r", source_key=str(source), source_uri=str(source),
                         action="reconstruct", outcome="reconstruction_queued")
    _, job_id = ledger.record_frame_and_enqueue(record, "no_stage_control", request)
    return job_id, request


def test_temporaries_of_interrupted_writes_are_removed_on_start_and_before_a_job(tmp_path, reconstructor):
    raw, out = tmp_path / "raw", tmp_path / "out"
    raw.mkdir()
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        ledger.start_run("r", "e", "{}", {})
        job_id, request = queue_one(ledger, raw / "a_t001.tif", raw)
        target = output_path(request, out)
        # What a SIGKILL during an earlier write leaves: both hidden temporaries of one output...
        target.parent.mkdir(parents=True)
        own = [target.with_name(f".{target.name}.0123456789ab.tmp"),
               target.with_name(f".{sidecar_path(target).name}.ba9876543210.tmp")]
        # ...and of another output deeper down; a user's own hidden file is not ours.
        (out / "well B2").mkdir()
        other = out / "well B2" / ".b_t001.reconstructed.ome.tif.00112233aabb.tmp"
        users = out / "well B2" / ".notes.tmp"
        for path in [*own, other, users]:
            path.write_bytes(b"half a file")

        worker = ReconstructionWorker(ledger=ledger, load_reconstructor=lambda: reconstructor,
                                      output_root=out, run_id="r")
        assert worker.run_once()  # the job clears its own temporaries before it writes
        assert not any(p.exists() for p in own) and other.exists()
        assert ledger.job(job_id)["state"] == "done" and target.exists()

        worker.start()  # the service starts its worker: everything interrupted is cleared
        worker.stop(drain=True, timeout=30)
        assert not other.exists() and users.exists()
    leftovers = [p.name for p in out.rglob(".*") if p.name != ".notes.tmp"]
    assert leftovers == [], leftovers


def test_a_locked_ledger_does_not_end_the_worker_thread(tmp_path, reconstructor):
    raw = tmp_path / "raw"
    raw.mkdir()
    path = tmp_path / "ledger.sqlite"
    with Ledger.open(path, busy_timeout_s=0.1) as ledger, capture_logs() as logs:
        ledger.start_run("r", "e", "{}", {})
        job_id, _ = queue_one(ledger, raw / "a_t001.tif", raw)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        worker = ReconstructionWorker(ledger=ledger, load_reconstructor=lambda: reconstructor,
                                      output_root=tmp_path / "out", run_id="r", idle_wait_s=0.05)
        worker.start()
        try:
            deadline = time.monotonic() + 20
            while not any(e["event"] == "reconstruct.claim_failed" for e in logs):
                assert time.monotonic() < deadline, "claim_job never failed"
                time.sleep(0.05)
            time.sleep(0.3)
            assert worker.alive(), "the worker thread died on a ledger error"
            other.execute("ROLLBACK")  # the lock goes away: the same thread takes the job
            other.close()
            while ledger.job(job_id)["state"] != "done":
                assert time.monotonic() < deadline + 20, ledger.job(job_id)
                assert worker.alive()
                time.sleep(0.05)
        finally:
            worker.stop(drain=False, timeout=30)
