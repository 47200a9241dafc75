"""The NIS driver under the real runner and ledger: bad files are quarantined in the ledger
with their reason, defocused frames are queued for reconstruction as `no_stage_control` and
logged `reacquire.unavailable`, and the real worker writes the reconstructions under the
output root mirroring the export folder. The classifier's verdict is fixed here (a stand-in)
because the point is the bookkeeping; the service test runs the shipped classifier."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
from conftest import noise, write_tiff
from structlog.testing import capture_logs

from refocusd.config.settings import NisSettings
from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.core.refocus import DeviceAutofocus
from refocusd.daemon.core.runner import Runner, RunnerOptions
from refocusd.daemon.output.worker import ReconstructionWorker
from refocusd.daemon.output.writer import sidecar_path
from refocusd.drivers import SystemClock
from refocusd.drivers.nis import NisExportFolder, open_fingerprints
from refocusd.models import Verdict
from refocusd.models.runtime import load_reconstructor


class AlwaysDefocused:
    model_id = "fixed-defocused"

    def classify(self, pixels, *, pixel_size_um=None):
        return Verdict(p_focused=0.02, label="defocused", model_id=self.model_id, latency_s=0.0)


def test_runner_quarantines_bad_exports_and_queues_defocused_frames(tmp_path, watch_dir):
    write_tiff(watch_dir / "plate A" / "good_t001xy02c1.tif", noise(seed=1))
    write_tiff(watch_dir / "stack_xy01.tif", [noise(seed=i) for i in range(3)])
    nan = noise().astype(np.float32)
    nan[5, 5] = np.nan
    write_tiff(watch_dir / "nan.tif", nan)
    (watch_dir / "zero.tif").write_bytes(b"")
    full = write_tiff(tmp_path / "full.tif", noise((256, 256))).read_bytes()
    (watch_dir / "cut.tif").write_bytes(full[: len(full) // 3])
    (watch_dir / "link.tif").symlink_to(tmp_path / "full.tif")
    (watch_dir / "half.nd2").write_bytes(b"\xda\xce\xbe\x0a" + b"\x00" * 4000)
    state = tmp_path / "state"
    stop = threading.Event()
    with Ledger.open(state / "ledger.sqlite") as ledger, capture_logs() as logs:
        ledger.start_run("r", "e", "{}", {})
        driver = NisExportFolder(
            NisSettings(watch_dir=watch_dir, settle_s=0.1, give_up_s=0.5, exit_when_idle_s=1.0),
            fingerprints=open_fingerprints(state / "ledger.sqlite"),
            stop=stop,
        )
        runner = Runner(
            driver=driver, classifier=AlwaysDefocused(), strategy=DeviceAutofocus(), ledger=ledger,
            clock=SystemClock(stop), stop=stop,
            options=RunnerOptions(run_id="r", experiment="e", max_retries=2, source_root=str(watch_dir)),
        )
        assert runner.run() == 5  # good + 3 pages + NaN (quarantined by the frame checks)
        driver.close()
        rows = {(Path(r["source_uri"]).name, r["source_page"]): r for r in ledger.frames()}
        worker = ReconstructionWorker(
            ledger=ledger, load_reconstructor=lambda: load_reconstructor("default", device="cpu"),
            output_root=tmp_path / "out", run_id="r",
        )
        while worker.run_once():
            pass
        written = {str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.ome.tif")}
    assert rows[("zero.tif", None)]["outcome"] == "quarantined"
    assert rows[("zero.tif", None)]["reason"] == "empty file (0 bytes)"
    assert rows[("nan.tif", None)]["reason"] == "image contains NaN or infinite values"
    assert "truncated" in rows[("cut.tif", None)]["reason"]
    assert rows[("link.tif", None)]["reason"] == "symlink pointing outside the watched folder (not followed)"
    assert "chunk-map signature missing" in rows[("half.nd2", None)]["reason"]
    assert sum(r["outcome"] == "quarantined" for r in rows.values()) == 5
    good = rows[("good_t001xy02c1.tif", None)]
    assert (good["outcome"], good["reason"], good["position"], good["channel"]) == (
        "reconstruction_queued", "no_stage_control", 1, "c1")
    assert {rows[("stack_xy01.tif", p)]["t"] for p in (0, 1, 2)} == {0, 1, 2}
    # Reconstructed under the output root, mirroring the export folder; stack pages get a tag.
    assert written == {"plate A/good_t001xy02c1.reconstructed.ome.tif", "stack_xy01_page00000.reconstructed.ome.tif",
                       "stack_xy01_page00001.reconstructed.ome.tif", "stack_xy01_page00002.reconstructed.ome.tif"}
    output = tmp_path / "out" / "plate A" / "good_t001xy02c1.reconstructed.ome.tif"
    sidecar = sidecar_path(output).read_text()
    raw_sha = hashlib.sha256((watch_dir / "plate A" / "good_t001xy02c1.tif").read_bytes()).hexdigest()
    assert "no_stage_control" in sidecar and raw_sha in sidecar
    assert sum(e["event"] == "reacquire.unavailable" for e in logs) == 4
    quarantined = [e for e in logs if e["event"] == "frame.quarantined"]
    assert len(quarantined) == 5 and "empty file (0 bytes)" in {e["reason"] for e in quarantined}


def test_defocused_frames_alert_the_operator_by_command_and_request_file(tmp_path, watch_dir):
    """Through the service's outcome hook, as `refocusd run` wires it."""
    import json
    import sys

    from refocusd.daemon.core.listeners import DriverCommit, OutcomeListeners

    write_tiff(watch_dir / "sub" / "late_t004xy07c2.tif", noise(seed=3))
    alerts = tmp_path / "alerts"
    script = tmp_path / "alert.py"
    script.write_text("import sys, pathlib; pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n")
    marker = tmp_path / "command-ran.txt"
    stop = threading.Event()
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger:
        ledger.start_run("r", "e", "{}", {})
        driver = NisExportFolder(
            NisSettings(watch_dir=watch_dir, settle_s=0.1, exit_when_idle_s=0.8, alert_request_dir=alerts,
                        alert_command=[sys.executable, str(script), str(marker), "{relative_path}", "t={t}",
                                       "xy={xy}"]),
            fingerprints=open_fingerprints(tmp_path / "state" / "ledger.sqlite"),
            stop=stop,
        )
        Runner(driver=driver, classifier=AlwaysDefocused(), strategy=DeviceAutofocus(), ledger=ledger,
               clock=SystemClock(stop), stop=stop, on_outcome=OutcomeListeners([DriverCommit(driver)]),
               options=RunnerOptions(run_id="r", experiment="e", max_retries=2)).run()
        driver.close()
    (request,) = alerts.glob("*.json")
    body = json.loads(request.read_text())
    assert (body["relative_path"], body["t"], body["xy"], body["c"], body["reacquire"]) == (
        "sub/late_t004xy07c2.tif", 4, 7, 2, "unavailable")
    deadline = threading.Event()
    for _ in range(50):
        if marker.exists():
            break
        deadline.wait(0.1)
    assert marker.read_text() == "sub/late_t004xy07c2.tif t=4 xy=7"
