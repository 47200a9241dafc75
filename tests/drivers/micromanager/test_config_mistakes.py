"""#14.16: Micro-Manager configuration mistakes are user errors (exit 2 naming the key),
not "not reachable" (exit 3, which systemd restarts on); a typo in the plan is refused."""

from __future__ import annotations

import subprocess

from conftest import ADAPTERS, REFOCUSD


def config(tmp_path, *, mm_dir=ADAPTERS, mode='"Fluorescent Beads"', plan_key="stage_positions"):
    path = tmp_path / "refocusd.toml"
    path.write_text(f"""
[service]
state_dir = "state"
output_root = "out"
[driver]
kind = "micromanager"
[driver.micromanager]
mm_dir = "{mm_dir}"
config_file = "MMConfig_demo.cfg"
camera_properties = {{Mode = {mode}}}
connect_retries = 1
connect_backoff_s = 0.01
[driver.micromanager.plan]
{plan_key} = [{{x = 0.0, y = 0.0, z = 0.0}}]
[models]
device = "cpu"
""")
    return path


def refocusd(*args):
    return subprocess.run([*REFOCUSD, *args], capture_output=True, text=True, timeout=300)


def assert_usage_error(result, *fragments):
    text = " ".join(result.stderr.split())
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr and "not reachable" not in text
    for fragment in fragments:
        assert fragment in text, text


def test_plan_typo_is_refused_by_config_check(tmp_path):
    assert_usage_error(refocusd("config", "check", str(config(tmp_path, plan_key="stage_positon"))),
                       "driver.micromanager.plan", "stage_positon")


def test_wrong_camera_value_and_missing_mm_dir_exit_2_naming_the_key(tmp_path):
    assert_usage_error(refocusd("run", "-c", str(config(tmp_path, mode='"Sparkles"'))),
                       "driver.micromanager.camera_properties.Mode", "Sparkles", "Fluorescent Beads")
    assert_usage_error(refocusd("run", "-c", str(config(tmp_path, mm_dir=tmp_path / "no-mm"))),
                       "driver.micromanager.mm_dir", str(tmp_path / "no-mm"))
