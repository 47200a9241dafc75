"""The ``dask`` reconstruction backend on a real ``dask.distributed.LocalCluster``.

Two worker processes with one thread each, as a facility would run them (each loads the
shipped reconstructor through the plugin). The daemon keeps the ledger and writes outputs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.config import ConfigError, load_settings
from refocusd.daemon.state.ledger import LEDGER_FILE, Ledger
from refocusd.daemon.output.writer import sidecar_path

from test_service import originals, run_service  # same folder (rootdir-relative imports)

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=40,  # logging.ERROR: the workers' own chatter is not under test
    ) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def remote(cluster):
    from refocusd.daemon.output.dask_backend import DaskReconstructor

    reconstructor = DaskReconstructor.connect(cluster.scheduler_address, "default", device="cpu")
    yield reconstructor
    reconstructor.close()


def _frame(seed: int, size: int = 256) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((size, size)) * 3000 + 500).astype(np.uint16)


def test_cluster_result_matches_the_local_reconstructor(remote):
    from refocusd.models.runtime import load_reconstructor

    frame = _frame(1)
    local = load_reconstructor("default", device="cpu").reconstruct(frame)
    restored = remote.reconstruct(frame)
    assert restored.shape == frame.shape and restored.dtype == frame.dtype
    # Same weights, same tiling, float32 on both sides: equal up to rounding of the last unit.
    assert np.max(np.abs(restored.astype(np.int32) - local.astype(np.int32))) <= 1
    provenance = remote.provenance
    assert provenance["backend"] == "dask" and provenance["worker"] in remote._client.scheduler_info()["workers"]
    assert provenance["model_id"] == remote.model_id


def test_a_frame_survives_its_worker_being_killed(remote, cluster):
    """SIGKILL the worker process running the frame: the scheduler reruns it elsewhere."""
    client = remote._client
    frame = _frame(2, size=900)  # a few seconds of work on one thread
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.setdefault("pixels", remote.reconstruct(frame)))
    thread.start()
    deadline = time.monotonic() + 60
    busy: list[str] = []
    while not busy and time.monotonic() < deadline:
        busy = [w for w, tasks in client.processing().items() if tasks]
        time.sleep(0.05)
    assert busy, "the frame never started on a worker"
    time.sleep(0.5)  # let it get into the network
    pid = client.run(os.getpid, workers=busy[:1])[busy[0]]
    os.kill(pid, signal.SIGKILL)
    thread.join(180)
    assert not thread.is_alive()
    restored = result["pixels"]
    assert isinstance(restored, np.ndarray) and restored.shape == frame.shape
    assert remote.provenance["worker"] != busy[0]


def test_service_reconstructs_on_the_cluster_and_writes_outputs_itself(settings_for, cluster):
    settings = settings_for(
        plate={"wells": ["A1", "A2"]},
        driver={"simulated": {"autofocus_miss_rate": 1.0, "autofocus_miss_um": [15.0, 20.0]}},
        timelapse={"timepoints": 2, "interval_s": 60.0, "max_delay_s": 0.05},
        reconstruction={"backend": "dask", "dask_scheduler": cluster.scheduler_address},
    )
    summary = run_service(settings)
    assert summary.frames == 4 and summary.reconstructed == 4
    with Ledger.open(settings.service.state_dir / LEDGER_FILE) as ledger:
        assert {f["outcome"] for f in originals(ledger)} == {"reconstructed"}
        outputs = [Path(ledger.job(j)["output_path"]) for j in range(1, 5)]
    workers = set(cluster.scheduler_info["workers"])
    for out in outputs:
        assert out.is_relative_to(settings.service.output_root)
        provenance = json.loads(sidecar_path(out).read_text())
        assert provenance["reconstructor"]["backend"] == "dask"
        assert provenance["reconstructor"]["worker"] in workers
        assert tifffile.imread(out).shape == (384, 384)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "refocusd.daemon.cli", *args],
        capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def test_cli_reconstructs_an_archive_on_the_cluster(tmp_path, cluster):
    inputs = tmp_path / "archive"
    inputs.mkdir()
    for i in range(3):
        tifffile.imwrite(inputs / f"frame {i}.tif", _frame(10 + i))
    (inputs / "broken.tif").write_bytes(b"not a tiff")
    done = _cli("reconstruct", str(inputs), "--out", str(tmp_path / "out"), "--dask", cluster.scheduler_address)
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 1, done.stderr  # one input failed, the others were done
    assert len(rows) == 4
    errors = [r for r in rows if "error" in r]
    assert [Path(r["path"]).name for r in errors] == ["broken.tif"]
    for row in rows:
        if "output" in row:
            provenance = json.loads(sidecar_path(Path(row["output"])).read_text())
            assert provenance["reconstructor"]["backend"] == "dask"
    assert "Traceback" not in done.stderr


def test_cli_reports_an_unreachable_scheduler_clearly(tmp_path):
    frame = tmp_path / "a.tif"
    tifffile.imwrite(frame, _frame(3))
    done = _cli("reconstruct", str(frame), "--out", str(tmp_path / "out"), "--dask", "tcp://127.0.0.1:9")
    assert done.returncode == 3
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in done.stderr
    assert "Traceback" not in done.stderr


def test_dask_backend_needs_a_scheduler_address():
    with pytest.raises(ConfigError) as err:
        load_settings(None, overrides={"reconstruction": {"backend": "dask"}})
    assert any("dask_scheduler" in problem for problem in err.value.problems)
