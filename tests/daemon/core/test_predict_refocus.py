"""The predict strategy through the real runner, ledger and simulated microscope.

The defocus estimate is what this strategy consumes; here it is supplied by
:class:`EstimateFromStage`, which wraps a real classifier and reads the simulated stage's
true defocus (a correct estimate, one with an unknown sign, or a wrong one). That is the
point of these tests: what the strategy does with each kind of estimate, frames counted.
The estimate a trained network makes is measured in bench/bench_refocus.py.
"""

from __future__ import annotations

import dataclasses
import threading

import pytest
from structlog.testing import capture_logs

from refocusd.config.settings import PlateSettings, RefocusSettings, SimulatedMicroscopeSettings, TimelapseSettings
from refocusd.daemon.core.focus_surface import FocusSurfaceMemory
from refocusd.daemon.state.ledger import Ledger
from refocusd.daemon.core.refocus import PredictRefocus, RefocusStep, build_strategy, parabola_vertex
from refocusd.daemon.core.runner import Runner, RunnerOptions
from refocusd.drivers import SimulatedClock
from refocusd.drivers.simulated import SimulatedMicroscope

WELLS = ["A1", "A2", "B2", "B1"]


class EstimateFromStage:
    """A real classifier's verdict, with a defocus estimate taken from the simulated stage.

    ``mode``: ``signed`` (the truth, σ 0.5 µm); ``unsigned`` (a symmetric blur: the sign
    cannot be known, and a model trained with a Gaussian likelihood then reports a mean
    near 0 with σ ≈ |defocus|, as issue 11's network does); ``wrong`` (a confident
    +20 µm whatever the truth).
    """

    def __init__(self, inner, scope: SimulatedMicroscope, mode: str) -> None:
        self._inner, self._scope, self._mode = inner, scope, mode
        self.model_id = inner.model_id

    def classify(self, pixels, *, pixel_size_um=None):
        verdict = self._inner.classify(pixels, pixel_size_um=pixel_size_um)
        truth = self._scope._true_defocus()
        estimate, sigma = {"signed": (truth, 0.5), "unsigned": (0.0, max(abs(truth), 1.0)),
                           "wrong": (20.0, 0.5)}[self._mode]
        return dataclasses.replace(verdict, defocus_um=estimate, defocus_sigma_um=sigma)

    def classify_batch(self, frames, *, pixel_sizes=None):
        return [self.classify(f) for f in frames]


@pytest.fixture(scope="module")
def measure_classifier():
    """The shipped SDCNN: it decides focused/defocused; the estimate is the test's."""
    from refocusd.models.runtime import load_classifier

    return load_classifier("default", device="cpu")


def microscope(tmp_path, *, miss_rate=1.0, wells=WELLS, miss_um=(10.0, 40.0)):
    settings = SimulatedMicroscopeSettings(
        seed=3, frame_shape=(256, 256), autofocus_miss_rate=miss_rate, autofocus_miss_um=miss_um, save_raw=False,
    )
    return SimulatedMicroscope(settings, PlateSettings(wells=wells), TimelapseSettings(), clock=SimulatedClock(),
                               data_dir=tmp_path)


def run(tmp_path, classifier_for, refocus: RefocusSettings, *, memory=None, wells=WELLS):
    scope = microscope(tmp_path, wells=wells)
    classifier = classifier_for(scope)
    with Ledger.open(tmp_path / "ledger.sqlite") as ledger, capture_logs() as logs:
        ledger.start_run("r", "e", "{}", {})
        runner = Runner(
            driver=scope, classifier=classifier, strategy=build_strategy(refocus, classifier), ledger=ledger,
            clock=scope._clock, options=RunnerOptions(run_id="r", experiment="e", max_retries=refocus.max_retries,
                                                       spool_dir=tmp_path / "spool"),
            stop=threading.Event(), focus_memory=memory,
        )
        runner.run()
        rows = list(ledger.frames())
    scope.close()
    originals = [r for r in rows if r["retry"] == 0]
    return originals, rows, logs


def test_a_correct_estimate_recovers_in_one_frame(tmp_path, measure_classifier):
    originals, rows, logs = run(
        tmp_path, lambda scope: EstimateFromStage(measure_classifier, scope, "signed"), RefocusSettings()
    )
    assert len(originals) == len(WELLS)
    assert [r["outcome"] for r in originals] == ["reacquired"] * len(WELLS)
    assert [r["recovery_frames"] for r in originals] == [1] * len(WELLS), "one move, one re-acquisition"
    methods = [e["method"] for e in logs if e["event"] == "refocus.done"]
    assert methods == ["estimate"] * len(WELLS)
    steps = [e for e in logs if e["event"] == "refocus.step"]
    assert {"z_um", "estimate_um", "score"} <= set(steps[0]) and steps[0]["kind"] == "frame"


def test_unknown_sign_is_probed_on_one_side_and_the_score_chooses(tmp_path, measure_classifier):
    originals, rows, logs = run(
        tmp_path, lambda scope: EstimateFromStage(measure_classifier, scope, "unsigned"), RefocusSettings()
    )
    assert [r["outcome"] for r in originals] == ["reacquired"] * len(WELLS)
    probes = [e for e in logs if e["event"] == "refocus.step" and e["kind"] == "probe"]
    assert len(probes) == len(WELLS), "one probe per recovery"
    assert [r["recovery_frames"] for r in originals] == [2] * len(WELLS), "a probe and the re-acquisition"
    assert all(e["method"] == "probe" for e in logs if e["event"] == "refocus.done")


def test_a_wrong_estimate_falls_back_to_the_sweep(tmp_path, measure_classifier):
    originals, rows, logs = run(
        tmp_path, lambda scope: EstimateFromStage(measure_classifier, scope, "wrong"), RefocusSettings(),
        wells=WELLS[:2],
    )
    methods = [e["method"] for e in logs if e["event"] == "refocus.done"]
    assert methods == ["estimate", "sweep"] * 2
    assert sum(e["event"] == "refocus.fallback" for e in logs) == 2
    recovered = [r for r in originals if r["outcome"] == "reacquired"]
    assert len(recovered) == 2, [r["outcome"] for r in originals]
    # 1 wrong move + re-acquisition, ≤ 2 refine planes, a 15-plane sweep, a re-acquisition.
    assert all(3 + 15 <= r["recovery_frames"] <= 2 + 2 + 15 + 1 for r in recovered), [
        r["recovery_frames"] for r in recovered
    ]


def test_the_coarse_to_fine_sweep_costs_fewer_than_21_planes():
    sweep = build_strategy(RefocusSettings(strategy="sweep"), classifier=None)
    assert sweep.planes_per_sweep == 15
    assert isinstance(build_strategy(RefocusSettings(), classifier=None), PredictRefocus)


def test_parabola_vertex_of_the_best_planes():
    steps = [RefocusStep("frame", z, -((z - 3.0) ** 2)) for z in (-10.0, 0.0, 10.0, 20.0)]
    assert parabola_vertex(steps) == pytest.approx(3.0, abs=1e-6)
    assert parabola_vertex(steps[:2]) is None


def test_focus_memory_predicts_the_next_wells_focus_from_tilt(tmp_path):
    memory = FocusSurfaceMemory()
    for x, y in [(0, 0), (9000, 0), (18000, 0), (18000, 9000)]:
        memory.observe(x, y, 0.0, 1500 + 1.5 * x / 1000 - 0.8 * y / 1000)
    assert memory.start_z(9000, 9000, 0.0) == pytest.approx(1500 + 13.5 - 7.2, abs=0.5)
