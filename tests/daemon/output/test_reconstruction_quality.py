"""Every reconstruction is scored against its input, and one that does not look better is
marked ``not_improved`` (provenance, ledger, log) and, with ``write_not_improved = false``,
not written. Real shipped networks, real TIFFs from the simulator, a real SQLite ledger."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
from structlog.testing import capture_logs

from refocusd.daemon.output.worker import ReconstructionWorker
from refocusd.daemon.output.writer import sidecar_path
from refocusd.daemon.state.ledger import FrameRecord, Ledger
from refocusd.drivers import Coordinates, Frame, SourceRef
from refocusd.models import Verdict
from refocusd.models.quality import QualityRule, score_reconstruction
from refocusd.models.synth.camera import Camera
from refocusd.models.synth.optics import OBJECTIVES, render
from refocusd.models.synth.specimen import Specimen, random_specimen

SIDE = 256
PIXEL_UM = 595.0 / 1608.0  # 10x behind the paper's camera


@pytest.fixture(scope="module")
def models():
    from refocusd.models.runtime import load_classifier, load_reconstructor

    return load_reconstructor("default", device="cpu"), load_classifier("default", device="cpu")


def _shoot(specimen: Specimen, z_um: float, seed: int) -> np.ndarray:
    camera = Camera(bit_depth=8, full_well_e=20_000.0, background_fill=0.4)
    return camera.expose(render(specimen, z_um, OBJECTIVES["10x"]), np.random.default_rng(seed))


def _cells(seed: int) -> Specimen:
    rng = np.random.default_rng(seed)
    return random_specimen((SIDE, SIDE), rng, pixel_size_um=PIXEL_UM, density=0.5)


def _empty() -> Specimen:
    return Specimen(np.ones((SIDE, SIDE), np.complex64), pixel_size_um=PIXEL_UM)


def _enqueue(ledger: Ledger, path: Path, i: int) -> int:
    frame = Frame(
        pixels=np.zeros((4, 4), np.uint8),
        coords=Coordinates(plate="P1", well=f"A{i + 1:02d}", position=0, t=1, z_index=0, channel="PH"),
        source=SourceRef(uri=str(path)),
        acquired_at=1_767_225_600.0 + i,
        scheduled_at=1_767_225_600.0 + i,
        deadline=1_767_225_660.0 + i,
        experiment="exp",
    )
    verdict = Verdict(p_focused=0.1, label="defocused", model_id="another-classifier@1", latency_s=0.0)
    record = FrameRecord.from_frame(frame, run_id="r", verdict=verdict, action="reconstruct",
                                    outcome="reconstruction_queued")
    payload = {"source_uri": str(path), "coords": {"well": f"A{i + 1:02d}", "t": 1},
               "verdict": verdict.as_dict()}
    return ledger.record_frame_and_enqueue(record, "missed_timepoint", payload)[1]


def _worker(ledger: Ledger, models, out: Path, *, write_not_improved: bool) -> ReconstructionWorker:
    reconstructor, classifier = models
    return ReconstructionWorker(
        ledger=ledger, load_reconstructor=lambda: reconstructor, output_root=out, run_id="r",
        classifier=classifier, quality_rule=QualityRule(), write_not_improved=write_not_improved,
    )


def test_an_output_identical_to_its_input_is_not_improved(models) -> None:
    _, classifier = models
    frame = _shoot(_cells(3), -20.0, seed=1)
    score = score_reconstruction(classifier, frame, frame.copy())
    assert score.quality == "not_improved"
    assert score.sharpness_gain == pytest.approx(1.0)
    assert score.p_focused_after == pytest.approx(score.p_focused_before)
    assert any("not find it clearly more focused" in r for r in score.reasons)


def test_score_is_in_the_provenance_sidecar_ome_and_log(tmp_path: Path, models) -> None:
    source = tmp_path / "raw" / "A01_t001.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, _shoot(_cells(5), -20.0, seed=2))
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger, capture_logs() as logs:
        ledger.start_run("r", "exp", "{}", {})
        job_id = _enqueue(ledger, source, 0)
        worker = _worker(ledger, models, tmp_path / "out", write_not_improved=True)
        assert worker.run_once()
        job = ledger.job(job_id)
    assert job is not None and job["state"] == "done" and job["output_path"]
    output = Path(job["output_path"])
    sidecar = json.loads(sidecar_path(output).read_text())
    quality = sidecar["quality"]
    assert quality["quality"] in ("improved", "not_improved")
    assert {"p_focused_before", "p_focused_after", "defocus_um_before", "defocus_um_after",
            "sharpness_gain", "reasons", "written", "classifier"} <= set(quality)
    assert quality["written"] is True
    # The input was re-classified: the ledger's verdict came from another classifier.
    _, classifier = models
    assert quality["classifier"] == classifier.model_id
    assert 0.0 <= quality["p_focused_before"] <= 1.0 and quality["sharpness_gain"] > 0
    with tifffile.TiffFile(output) as tif:
        ome = tif.ome_metadata or ""
    assert "quality.quality" in ome and "quality.sharpness_gain" in ome
    assert "quality.p_focused_before" in ome and "quality.defocus_um_after" in ome
    (done,) = [e for e in logs if e["event"] == "reconstruct.done"]
    assert done["quality"] == quality["quality"]
    assert done["sharpness_gain"] == pytest.approx(quality["sharpness_gain"], abs=1e-3)
    assert done["p_focused_after"] == pytest.approx(quality["p_focused_after"], abs=1e-3)


def test_empty_field_is_not_improved_and_not_written_when_so_configured(
    tmp_path: Path, models
) -> None:
    source = tmp_path / "raw" / "A02_t001.tif"
    source.parent.mkdir()
    tifffile.imwrite(source, _shoot(_empty(), 10.0, seed=3))
    out = tmp_path / "out"
    with Ledger.open(tmp_path / "state" / "ledger.sqlite") as ledger, capture_logs() as logs:
        ledger.start_run("r", "exp", "{}", {})
        job_id = _enqueue(ledger, source, 1)
        worker = _worker(ledger, models, out, write_not_improved=False)
        assert worker.run_once()
        job = ledger.job(job_id)
        (frame,) = ledger.frames()
        counts = ledger.counts()
    # Done, with the reason, and nothing written.
    assert job is not None and job["state"] == "done" and job["output_path"] is None
    assert frame["outcome"] == "not_improved"
    assert "no structure to restore" in frame["reason"]
    assert not out.exists() or not any(out.rglob("*"))
    assert counts["not_improved"] == 1 and counts["reconstructed"] == 0
    assert worker.not_improved == 1 and worker.done == 1
    (done,) = [e for e in logs if e["event"] == "reconstruct.done"]
    assert done["quality"] == "not_improved" and done["written"] is False
    assert done["log_level"] == "warning"
    assert any("no structure" in r for r in done["quality_reasons"])
