"""The [driver.micromanager] section and the useq plan (no hardware needed)."""

from __future__ import annotations

import json

import pytest

from refocusd.config import ConfigError, load_settings
from refocusd.config.settings import MicroManagerSettings, TimelapseSettings
from refocusd.drivers import DriverError
from refocusd.drivers.micromanager import RETRY_AXIS, PlanError, load_sequence, plan_steps
from refocusd.drivers.micromanager.session import config_path


def test_kind_micromanager_needs_its_section_and_mode_inputs():
    with pytest.raises(ConfigError, match="needs a \\[driver.micromanager\\] section"):
        load_settings(None, overrides={"driver": {"kind": "micromanager"}})
    with pytest.raises(ConfigError, match="follow_dataset"):
        load_settings(None, overrides={"driver": {"kind": "micromanager", "micromanager": {"mode": "follow"}}})
    with pytest.raises(ConfigError, match="mm_dir and config_file"):
        load_settings(None, overrides={"driver": {"kind": "micromanager", "micromanager": {"mode": "run"}}})
    with pytest.raises(ConfigError, match="unknown key"):
        load_settings(None, overrides={"driver": {"kind": "micromanager", "micromanager": {"mode": "run", "bogus": 1}}})


def test_relative_paths_resolve_against_the_config_file_and_a_bare_cfg_name_against_mm_dir(tmp_path):
    config = tmp_path / "conf" / "refocusd.toml"
    config.parent.mkdir()
    config.write_text(
        '[driver]\nkind = "micromanager"\n[driver.micromanager]\nmm_dir = "mm"\nconfig_file = "demo.cfg"\n'
        'data_dir = "data"\nplan_file = "plan.json"\n'
    )
    mm = load_settings(config).driver.micromanager
    assert mm.mm_dir == config.parent / "mm" and mm.data_dir == config.parent / "data"
    assert mm.plan_file == config.parent / "plan.json"
    assert config_path(mm) == config.parent / "mm" / "demo.cfg"
    assert load_settings(config).driver.source_root == config.parent / "data"


def test_plan_file_becomes_events_with_deadlines(tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({
        "stage_positions": [{"x": 0, "y": 0, "z": 0, "name": "B2"}, {"x": 100, "y": 0, "z": 3}],
        "time_plan": {"interval": 10, "loops": 3},
    }))
    mm = MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg", plan_file=plan)
    steps = plan_steps(load_sequence(mm), TimelapseSettings(max_delay_s=4.0), plate="P")
    assert len(steps) == 6
    first, second, last = steps[0], steps[1], steps[-1]
    assert first.event == {"axes": {"time": 0, "position": 0}, "x": 0.0, "y": 0.0, "z": 0.0}
    assert first.coords.well == "B2" and second.coords.well == "p1" and first.coords.plate == "P"
    assert (first.due_s, first.deadline_s) == (0.0, 4.0)
    assert last.event["min_start_time"] == 20.0 and last.deadline_s == 24.0
    retry = second.retry_event(1, z_um=0.25)
    assert retry["axes"] == {"time": 0, "position": 1, RETRY_AXIS: 1} and retry["z"] == 0.25 and retry["x"] == 100.0


def test_a_single_pass_has_no_deadline_and_a_missing_plan_is_a_clear_error(tmp_path):
    mm = MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg", plan={"stage_positions": [{"x": 1, "y": 2}]})
    (step,) = plan_steps(load_sequence(mm), TimelapseSettings())
    assert step.deadline_s is None and "z" not in step.event
    with pytest.raises(PlanError, match="needs an acquisition plan"):
        load_sequence(MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg"))
    with pytest.raises(PlanError, match="invalid acquisition plan"):
        load_sequence(MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg", plan={"stage_positions": "nope"}))


def mm_position(label: str, x: float, y: float, z: float) -> dict:
    """One entry as Micro-Manager's Stage Position List window writes it."""
    return {
        "DefaultXYStage": {"type": "STRING", "scalar": "XY"},
        "DefaultZStage": {"type": "STRING", "scalar": "Z"},
        "DevicePositions": {"type": "PROPERTY_MAP", "array": [
            {"Device": {"type": "STRING", "scalar": "Z"}, "Position_um": {"type": "DOUBLE", "array": [z]}},
            {"Device": {"type": "STRING", "scalar": "XY"}, "Position_um": {"type": "DOUBLE", "array": [x, y]}},
        ]},
        "GridCol": {"type": "INTEGER", "scalar": 0},
        "GridRow": {"type": "INTEGER", "scalar": 0},
        "Label": {"type": "STRING", "scalar": label},
    }


def test_a_micromanager_position_list_replaces_the_plans_positions(tmp_path):
    pos = tmp_path / "plate.pos"
    pos.write_text(json.dumps({
        "encoding": "UTF-8", "format": "Micro-Manager Property Map", "major_version": 2, "minor_version": 0,
        "map": {"StagePositions": {"type": "PROPERTY_MAP", "array": [
            mm_position("A1-Site_0", 10.0, 20.0, 1.5), mm_position("B2-Site_0", 9010.0, 9020.0, -2.0)]}},
    }))
    mm = MicroManagerSettings(mm_dir=tmp_path, config_file="x.cfg", positions_file=pos,
                              plan={"time_plan": {"interval": 5, "loops": 2}})
    steps = plan_steps(load_sequence(mm), TimelapseSettings())
    assert [(s.coords.well, s.coords.t, s.event["x"], s.event["y"], s.event["z"]) for s in steps] == [
        ("A1-Site_0", 0, 10.0, 20.0, 1.5), ("B2-Site_0", 0, 9010.0, 9020.0, -2.0),
        ("A1-Site_0", 1, 10.0, 20.0, 1.5), ("B2-Site_0", 1, 9010.0, 9020.0, -2.0),
    ]
    pos.write_text('{"map": {}}')
    with pytest.raises(DriverError, match="not a readable Micro-Manager position list"):
        load_sequence(mm)
