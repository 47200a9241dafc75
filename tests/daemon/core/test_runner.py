"""The runner with a frame source written for the test: bad frames are quarantined with a
reason, a source is never processed twice, and a driver without stage control gets
reconstructions. The classifier is a real (freshly initialised, untrained) SDCNN: these
tests are about the runner's bookkeeping, not about the network's accuracy."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.core.refocus import DeviceAutofocus
from refocusd.daemon.core.runner import Runner, RunnerOptions
from refocusd.drivers import Capabilities, Coordinates, Frame, SimulatedClock, SourceRef


class ListDriver:
    """A frame source with no stage control: yields the frames it was given."""

    capabilities = Capabilities()

    def __init__(self, frames: list[Frame]) -> None:
        self._frames = frames

    def frames(self) -> Iterator[Frame]:
        yield from self._frames

    def close(self) -> None:
        pass


class AlwaysDefocused:
    """Stands in for the classifier where a fixed verdict is the point of the test."""

    model_id = "fixed-defocused"

    def classify(self, pixels, *, pixel_size_um=None):
        from refocusd.models import Verdict

        return Verdict(p_focused=0.01, label="defocused", model_id=self.model_id, latency_s=0.0)

    def classify_batch(self, frames, *, pixel_sizes=None):
        return [self.classify(f) for f in frames]


@pytest.fixture(scope="module")
def untrained_classifier(tmp_path_factory):
    from refocusd.models.card import ModelCard, classifier_input_spec
    from refocusd.models.runtime import load_classifier
    from refocusd.models.sdcnn import build_sdcnn
    from refocusd.models.store import save_model

    folder = tmp_path_factory.mktemp("untrained")
    save_model(build_sdcnn(), folder, ModelCard(name="untrained", version="0", kind="classifier",
                                                architecture="sdcnn", input=classifier_input_spec()))
    return load_classifier(str(folder), device="cpu")


def frame(tmp_path: Path, name: str, pixels: np.ndarray, *, on_disk: bool = True) -> Frame:
    path = tmp_path / "raw" / f"{name}.tif"
    if on_disk:
        path.parent.mkdir(exist_ok=True)
        tifffile.imwrite(path, pixels)
    return Frame(pixels=pixels, coords=Coordinates(plate="p", well=name), source=SourceRef(uri=str(path)),
                 acquired_at=0.0, experiment="e")


def make_runner(tmp_path, driver, classifier, ledger):
    if not ledger.runs():
        ledger.start_run("r", "e", "{}", {})
    return Runner(
        driver=driver, classifier=classifier, strategy=DeviceAutofocus(), ledger=ledger,
        clock=SimulatedClock(), options=RunnerOptions(run_id="r", experiment="e", max_retries=2,
                                                      spool_dir=tmp_path / "spool"),
        stop=threading.Event(),
    )


BAD = {
    "nan": np.full((64, 64), np.nan, np.float32),
    "cube": np.zeros((4, 64, 64, 2), np.uint16),
    "tiny": np.zeros((4, 4), np.uint8),
    "bool": np.zeros((64, 64), bool),
    "five_channels": np.zeros((64, 64, 5), np.uint8),
}


def test_bad_frames_are_quarantined_with_a_reason_and_the_run_goes_on(tmp_path, untrained_classifier):
    good = np.random.default_rng(0).integers(0, 4000, (128, 128), dtype=np.uint16)
    frames = [frame(tmp_path, name, pixels, on_disk=False) for name, pixels in BAD.items()]
    frames.append(frame(tmp_path, "good", good))
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        processed = make_runner(tmp_path, ListDriver(frames), untrained_classifier, ledger).run()
        rows = {r["well"]: r for r in ledger.frames()}
    assert processed == len(frames)
    for name in BAD:
        assert rows[name]["outcome"] == "quarantined" and rows[name]["reason"], rows[name]
    assert "NaN" in rows["nan"]["reason"]
    assert rows["good"]["outcome"] != "quarantined"


def test_a_source_is_processed_once_even_if_the_driver_yields_it_again(tmp_path, untrained_classifier):
    pixels = np.random.default_rng(1).integers(0, 255, (96, 96), dtype=np.uint8)
    same = frame(tmp_path, "A1", pixels)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        runner = make_runner(tmp_path, ListDriver([same, same]), untrained_classifier, ledger)
        assert runner.run() == 1
        assert make_runner(tmp_path, ListDriver([same]), untrained_classifier, ledger).run() == 0
        assert len(list(ledger.frames())) == 1


def test_no_stage_control_means_reconstruction_and_memory_frames_are_spooled(tmp_path):
    pixels = np.random.default_rng(2).integers(0, 4000, (96, 96), dtype=np.uint16)
    in_memory = Frame(pixels=pixels, coords=Coordinates(plate="p", well="B2"),
                      source=SourceRef(uri="mem://camera/42"), acquired_at=0.0)
    on_disk = frame(tmp_path, "B3", pixels)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger:
        make_runner(tmp_path, ListDriver([in_memory, on_disk]), AlwaysDefocused(), ledger).run()
        jobs = [ledger.claim_job(), ledger.claim_job()]
    assert {j.reason for j in jobs} == {"no_stage_control"}
    spooled = Path(jobs[0].payload["source_uri"])
    assert spooled.parent == tmp_path / "spool" and np.array_equal(tifffile.imread(spooled), pixels)
    assert jobs[1].payload["source_uri"] == on_disk.source.uri, "files on disk are referenced, not copied"
