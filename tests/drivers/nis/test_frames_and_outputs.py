"""What a NIS export folder's frames become, end to end through the real driver, runner,
ledger and worker with the shipped reconstructor (issue #14, items 1, 2 and 21):

- every frame gets its own output, and an output counts as a frame's only when its
  provenance names that frame's content (SHA-256);
- the daemon and ``refocusd classify`` read the same files by the same rules (the shipped
  classifier on both sides).

Where only the bookkeeping matters the classifier's verdict is fixed (a stand-in)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from conftest import noise, write_tiff

from refocusd.config.settings import NisSettings
from refocusd.daemon.core.refocus import DeviceAutofocus
from refocusd.daemon.core.runner import Runner, RunnerOptions
from refocusd.daemon.output.worker import ReconstructionWorker
from refocusd.daemon.output.writer import sidecar_path
from refocusd.daemon.state.ledger import Ledger
from refocusd.drivers import SystemClock
from refocusd.drivers.nis import NisExportFolder, open_fingerprints
from refocusd.models import Verdict
from refocusd.models.runtime import load_classifier, load_reconstructor


class AlwaysDefocused:
    model_id = "fixed-defocused"

    def classify(self, pixels):
        return Verdict(p_focused=0.02, label="defocused", model_id=self.model_id, latency_s=0.0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reconstructor():
    return load_reconstructor("default", device="cpu")


def run_once(tmp_path: Path, watch_dir: Path, run_id: str, reconstructor=None, classifier=None) -> list[dict]:
    """One daemon pass over the folder: every frame recorded, every job run (when given a
    reconstructor)."""
    state = tmp_path / "state"
    stop = threading.Event()
    with Ledger.open(state / "ledger.sqlite") as ledger:
        ledger.start_run(run_id, "e", "{}", {})
        driver = NisExportFolder(
            NisSettings(watch_dir=watch_dir, settle_s=0.1, give_up_s=0.5, exit_when_idle_s=0.8),
            fingerprints=open_fingerprints(state / "ledger.sqlite"),
            stop=stop,
        )
        Runner(
            driver=driver, classifier=classifier or AlwaysDefocused(), strategy=DeviceAutofocus(), ledger=ledger,
            clock=SystemClock(stop), stop=stop,
            options=RunnerOptions(run_id=run_id, experiment="e", max_retries=1, source_root=str(watch_dir)),
        ).run()
        driver.close()
        worker = ReconstructionWorker(ledger=ledger, load_reconstructor=lambda: reconstructor,
                                      output_root=tmp_path / "out", run_id=run_id)
        while reconstructor is not None and worker.run_once():
            pass
        return [ledger.job(i) for i in range(1, 100) if ledger.job(i) is not None]


def recorded_sha(output: str) -> str:
    return json.loads(sidecar_path(Path(output)).read_text())["source"]["sha256"]


def test_frames_that_share_a_stem_get_outputs_of_their_own(tmp_path, watch_dir, reconstructor):
    names = ["sample_t001.tif", "sample_t001.ome.tif", "sample_t001.tiff"]
    for seed, name in enumerate(names):
        write_tiff(watch_dir / name, noise((64, 64), np.uint8, seed=seed))
    jobs = run_once(tmp_path, watch_dir, "r1", reconstructor)
    assert [j["state"] for j in jobs] == ["done"] * 3
    outputs = {Path(j["payload"]["source_uri"]).name: j["output_path"] for j in jobs}
    assert len(set(outputs.values())) == 3, outputs
    for name, output in outputs.items():
        assert recorded_sha(output) == sha256(watch_dir / name), (name, output)


def test_a_replaced_file_is_reconstructed_again_and_the_old_output_kept(tmp_path, watch_dir, reconstructor):
    source = write_tiff(watch_dir / "well_t001.tif", noise((64, 64), np.uint8, seed=1))
    old_sha = sha256(source)
    (first,) = run_once(tmp_path, watch_dir, "r1", reconstructor)
    write_tiff(source, noise((64, 64), np.uint8, seed=2))  # a new acquisition, same name
    os.utime(source, (first["created_at"] + 10, first["created_at"] + 10))
    new_sha = sha256(source)
    jobs = run_once(tmp_path, watch_dir, "r2", reconstructor)
    assert [j["state"] for j in jobs] == ["done", "done"]
    second = jobs[1]
    assert second["output_path"] != first["output_path"]
    assert recorded_sha(second["output_path"]) == new_sha
    assert recorded_sha(first["output_path"]) == old_sha  # the old frame's output is untouched


def test_the_daemon_and_classify_read_the_same_files_by_the_same_rules(tmp_path, watch_dir):
    rgba = np.dstack([noise((64, 64), np.uint8, seed=s) for s in range(3)] + [np.full((64, 64), 255, np.uint8)])
    write_tiff(watch_dir / "rgba.tif", rgba, extrasamples=["unassalpha"])
    write_tiff(watch_dir / "mono.tif", noise((64, 64), np.uint8, seed=4))
    write_tiff(watch_dir / ".hidden.tif", noise((64, 64), np.uint8, seed=5))
    write_tiff(watch_dir / "._mono.tif", noise((64, 64), np.uint8, seed=6))  # a macOS resource fork
    write_tiff(watch_dir / ".sync" / "inside.tif", noise((64, 64), np.uint8, seed=7))

    run_once(tmp_path, watch_dir, "r1", classifier=load_classifier("default", device="cpu"))
    with Ledger.open(tmp_path / "state" / "ledger.sqlite", read_only=True) as ledger:
        daemon = {Path(f["source_uri"]).name: f["outcome"] for f in ledger.frames()}
    cli = subprocess.run(
        [sys.executable, "-m", "refocusd.daemon.cli", "classify", "--json", str(watch_dir)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    answered = {Path(row["path"]).name: "error" not in row for row in map(json.loads, cli.stdout.splitlines())}

    assert set(daemon) == {"rgba.tif", "mono.tif"} and "quarantined" not in daemon.values(), daemon
    assert answered == {"rgba.tif": True, "mono.tif": True}, (answered, cli.stderr[-2000:])
