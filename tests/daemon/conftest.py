"""Shared set-up for daemon tests: small simulated experiments on real components."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from refocusd.config import Settings, load_settings  # noqa: E402
from refocusd.config.loader import deep_merge  # noqa: E402


def small_settings(tmp_path: Path, **overrides) -> Settings:
    """A fast experiment: 384×384 frames, a few wells, virtual clock, CPU."""
    base = {
        "service": {"state_dir": str(tmp_path / "state"), "output_root": str(tmp_path / "out"), "experiment": "t"},
        "driver": {"simulated": {"frame_shape": [384, 384], "data_dir": str(tmp_path / "data"), "seed": 3}},
        "plate": {"wells": ["A1", "A2", "A3", "B1", "B2", "B3"]},
        "models": {"device": "cpu"},
    }
    return load_settings(None, overrides=deep_merge(base, overrides))


@pytest.fixture
def settings_for(tmp_path):
    """``settings_for(**overrides)``: :func:`small_settings` under this test's tmp_path."""
    return lambda **overrides: small_settings(tmp_path, **overrides)
