"""Configuration: TOML + environment, every problem named, the CLI's exit codes."""

import subprocess
import sys

import pytest

from refocusd.config import ConfigError, example_text, load_settings

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def test_example_file_is_valid_and_resolves_paths(tmp_path):
    path = tmp_path / "refocusd.toml"
    path.write_text(example_text())
    settings = load_settings(path)
    assert settings.service.state_dir == tmp_path / "refocusd-state"
    assert settings.driver.simulated.data_dir == tmp_path / "refocusd-data"
    assert settings.plate.rows * settings.plate.columns == 96


def test_environment_overrides_the_file(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text('[models]\ndevice = "gpu"\n[timelapse]\nmax_delay_s = 10\n')
    monkeypatch.setenv("REFOCUSD_MODELS__DEVICE", "cpu")
    settings = load_settings(path)
    assert settings.models.device == "cpu"
    assert settings.timelapse.max_delay_s == 10


def test_every_problem_is_named_with_key_and_value(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(
        '[models]\nthreshold = 2\ncolour = "blue"\n'
        '[refocus]\nsweep_step_um = 100\n'
        '[plate]\nwells = ["Z9"]\n'
        "[nonsense]\nx = 1\n"
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    text = "\n".join(info.value.problems)
    assert "models.threshold" in text and "2" in text
    assert "models.colour: unknown key" in text
    assert "sweep_step_um=100" in text
    assert "'Z9'" in text
    assert "nonsense: unknown key" in text
    assert len(info.value.problems) == 5


def test_unknown_environment_section_is_an_error(monkeypatch):
    monkeypatch.setenv("REFOCUSD_MODLES__DEVICE", "cpu")
    with pytest.raises(ConfigError, match="REFOCUSD_MODLES__DEVICE"):
        load_settings(None)


@pytest.mark.parametrize("content", ["[models\n", "\xff\xfe"])
def test_unreadable_toml(tmp_path, content):
    path = tmp_path / "broken.toml"
    path.write_bytes(content.encode("latin-1"))
    with pytest.raises(ConfigError):
        load_settings(path)


def test_cli_config_check_and_example(tmp_path):
    good = tmp_path / "good.toml"
    example = subprocess.run([*REFOCUSD, "config", "example"], capture_output=True, text=True, check=True)
    good.write_text(example.stdout)
    ok = subprocess.run([*REFOCUSD, "config", "check", str(good)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr

    bad = tmp_path / "bad.toml"
    bad.write_text("[timelapse]\ntimepoints = 0\n[service]\nfrobnicate = true\n")
    result = subprocess.run([*REFOCUSD, "config", "check", str(bad)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "timelapse.timepoints" in result.stderr and "service.frobnicate" in result.stderr
    assert "Traceback" not in result.stderr

    missing = subprocess.run([*REFOCUSD, "config", "check", str(tmp_path / "nope.toml")],
                             capture_output=True, text=True)
    assert missing.returncode == 2 and "file not found" in missing.stderr


def test_environment_written_the_natural_way(tmp_path):
    """#14.14: a list as a plain string, a section given a value, a typo in a key: exit 2
    naming the variable (never a traceback, never exit 1, never blamed on the file)."""
    import os

    path = tmp_path / "c.toml"
    path.write_text('[driver]\nkind = "nis"\n[driver.nis]\nwatch_dir = "export"\n')

    def check(**env):
        clean = {k: v for k, v in os.environ.items() if not k.startswith("REFOCUSD_")}
        return subprocess.run([*REFOCUSD, "config", "check", str(path)], capture_output=True, text=True,
                              timeout=60, env={**clean, **env})

    natural = check(REFOCUSD_DRIVER__NIS__PATTERNS="*.tif", REFOCUSD_DRIVER__NIS__SETTLE_S="2.5")
    assert natural.returncode == 0, natural.stderr
    listed = check(REFOCUSD_DRIVER__NIS__PATTERNS='["*.tif", "*.nd2"]')
    assert listed.returncode == 0, listed.stderr
    for env, named in (
        ({"REFOCUSD_MODELS": "cpu"}, "REFOCUSD_MODELS"),
        ({"REFOCUSD_MODELS__DEVCE": "cpu"}, "REFOCUSD_MODELS__DEVCE"),
        ({"REFOCUSD_DRIVER__NIS__SETTLE_S": "soon"}, "REFOCUSD_DRIVER__NIS__SETTLE_S"),
        ({"REFOCUSD_DRIVER__NIS": "{not json"}, "REFOCUSD_DRIVER__NIS"),
    ):
        result = check(**env)
        assert result.returncode == 2, (env, result.stderr)
        assert named in result.stderr and "Traceback" not in result.stderr, result.stderr
        blamed = result.stderr.split(named)[0]
        assert str(path) not in blamed, f"{named} is blamed on the file: {result.stderr}"


def test_environment_list_values_are_parsed(monkeypatch):
    monkeypatch.setenv("REFOCUSD_DRIVER__NIS__PATTERNS", "*.tif, *.nd2")
    assert load_settings(None).driver.nis.patterns == ["*.tif", "*.nd2"]
