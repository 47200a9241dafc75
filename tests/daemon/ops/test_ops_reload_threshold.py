"""#14.18: a SIGHUP threshold change is applied to whichever classifier runs, or not
reported as applied. Here the focus-measure classifier (a `refocusd calibrate` file)."""

from __future__ import annotations

import numpy as np
from structlog.testing import capture_logs

from refocusd.config import load_settings
from refocusd.models.focus_measure_classifier import FocusMeasureCalibration, load_focus_measure_classifier
from refocusd.daemon.ops.supervision import Supervisor


def config(tmp_path, threshold: float):
    path = tmp_path / "refocusd.toml"
    path.write_text(f'[service]\nstate_dir = "state"\noutput_root = "out"\n'
                    f'[models]\nclassifier = "{tmp_path / "cal.json"}"\nthreshold = {threshold}\n')
    return path


def test_reloaded_threshold_reaches_the_focus_measure_classifier(tmp_path):
    from refocusd.models.focus_measures import FOCUS_MEASURES

    frame = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    measure = FOCUS_MEASURES["brenner"](frame)
    # This frame sits just above the calibration's centre: p_focused a little over 0.5.
    FocusMeasureCalibration(measure="brenner", threshold=measure - 0.1 * abs(measure), scale=abs(measure),
                            focused_within_um=2.0).save(tmp_path / "cal.json")
    path = config(tmp_path, 0.5)
    settings = load_settings(path)
    classifier = load_focus_measure_classifier(settings.models.classifier, threshold=settings.models.threshold)
    p = classifier.classify(frame).p_focused
    supervisor = Supervisor(settings, config_path=path)
    try:
        supervisor.wrap_classifier(classifier)
        assert 0.5 < p < 0.9
        config(tmp_path, p + 0.02)  # just above this frame's p
        before = classifier.classify(frame).label
        with capture_logs() as logs:
            assert supervisor.reload()
        (reloaded,) = [e for e in logs if e["event"] == "config.reloaded"]
        assert "models.threshold" in reloaded["applied"]
        assert classifier.threshold == supervisor.settings.models.threshold
        assert before == "focused" and classifier.classify(frame).label == "defocused", "the new threshold is in force"
    finally:
        supervisor.close("stopped")
