"""Running the real daemon in a subprocess, as users do: config files, ledger reads, signals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
WELLS = [f"{r}{c}" for r in "ABCD" for c in range(1, 7)]  # 24 wells


def write_config(
    tmp_path: Path, *, miss_rate: float = 0.25, timepoints: int = 1, output_root: str = "out", extra: str = ""
) -> Path:
    """A 24-well run on the simulated microscope (384 px frames, virtual clock) under tmp_path."""
    wells = ", ".join(f'"{w}"' for w in WELLS)
    config = tmp_path / "refocusd.toml"
    config.write_text(
        f"""
[service]
experiment = "crash-test"
state_dir = "state"
output_root = "{output_root}"
[driver.simulated]
seed = 11
data_dir = "data"
frame_shape = [384, 384]
autofocus_miss_rate = {miss_rate}
[plate]
wells = [{wells}]
[timelapse]
timepoints = {timepoints}
interval_s = 60.0
max_delay_s = 0.5
[models]
device = "cpu"
[logging]
format = "json"
file = "logs/refocusd.jsonl"
{extra}
"""
    )
    return config


def ledger_rows(tmp_path: Path, query: str) -> list[tuple]:
    """Rows of a read-only query on the ledger ([] while it does not exist or is busy)."""
    db = tmp_path / "state" / "ledger.sqlite"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute(query).fetchall()
    except sqlite3.OperationalError:
        return []


def frame_rows(tmp_path: Path) -> list[tuple]:
    return ledger_rows(tmp_path, "SELECT well, position, t, parent_id, outcome, source_key FROM frames")


def wait_until(proc: subprocess.Popen, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            pytest.fail(f"refocusd exited early with {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        time.sleep(0.05)
    pytest.fail(f"{what}: not after {timeout} s")


def wait_for_frames(tmp_path: Path, proc: subprocess.Popen, n: int, timeout: float = 240) -> None:
    wait_until(proc, lambda: len(frame_rows(tmp_path)) >= n, f"{n} frames in the ledger", timeout)


def log_events(tmp_path: Path) -> list[dict]:
    path = tmp_path / "logs" / "refocusd.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def start(config: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [*REFOCUSD, "run", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
