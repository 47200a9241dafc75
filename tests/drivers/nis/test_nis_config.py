"""The `[driver.nis]` section: validation, relative paths, and the never-write-there guard."""

from __future__ import annotations

import pytest

from refocusd.config import ConfigError, load_settings
from refocusd.daemon.factories import build_nis
from refocusd.drivers import DriverError, SystemClock


def test_relative_paths_resolve_against_the_config_file_and_outputs_mirror_the_export(tmp_path):
    config = tmp_path / "refocusd.toml"
    config.write_text('[driver]\nkind = "nis"\n[driver.nis]\nwatch_dir = "export"\nobserver = "polling"\n'
                      'alert_request_dir = "alerts"\n')
    settings = load_settings(config)
    assert settings.driver.nis.watch_dir == tmp_path / "export"
    assert settings.driver.nis.alert_request_dir == tmp_path / "alerts"
    assert settings.driver.source_root == tmp_path / "export"


def test_bad_values_are_named(tmp_path):
    config = tmp_path / "refocusd.toml"
    config.write_text('[driver]\nkind = "nis"\n[driver.nis]\nobserver = "inotify"\nsettle_s = -1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config)
    text = str(info.value)
    assert "driver.nis.observer" in text and "driver.nis.settle_s" in text


def test_outputs_inside_the_watched_folder_are_refused(tmp_path):
    config = tmp_path / "refocusd.toml"
    config.write_text('[service]\noutput_root = "export/reconstructed"\n'
                      '[driver]\nkind = "nis"\n[driver.nis]\nwatch_dir = "export"\n')
    with pytest.raises(ConfigError, match="service.output_root: .* is inside driver.nis.watch_dir"):
        load_settings(config)
    # Settings built in code (not through the loader) are refused when the driver is built.
    settings = load_settings(None, overrides={
        "driver": {"kind": "nis", "nis": {"watch_dir": str(tmp_path / "export")}}}).model_copy()
    service = settings.service.model_copy(update={"state_dir": tmp_path / "export" / "state"})
    with pytest.raises(DriverError, match="service.state_dir: .* is inside"):
        build_nis(settings.model_copy(update={"service": service}), SystemClock())
