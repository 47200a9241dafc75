"""`refocusd run` on a NIS export folder as users run it: the real CLI in a subprocess with
the shipped models, SIGKILLed in the middle of a burst, restarted, then stopped by SIGTERM.
Every file must be in the ledger exactly once and the raw exports untouched."""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import noise, write_tiff

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]
FILES = 300

pytestmark = pytest.mark.slow


def write_config(tmp_path: Path, watch_dir: Path) -> Path:
    config = tmp_path / "refocusd.toml"
    config.write_text(
        f"""
[service]
experiment = "nis-crash"
state_dir = "state"
output_root = "out"
[driver]
kind = "nis"
[driver.nis]
watch_dir = "{watch_dir.name}"
settle_s = 0.3
give_up_s = 2.0
rescan_interval_s = 5.0
heartbeat_s = 1.0
[models]
device = "cpu"
[logging]
format = "json"
file = "logs/refocusd.jsonl"
"""
    )
    return config


def ledger_rows(tmp_path: Path) -> list[tuple[str, str]]:
    db = tmp_path / "state" / "ledger.sqlite"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT source_uri, outcome FROM frames").fetchall()
    except sqlite3.OperationalError:
        return []


def wait_rows(tmp_path: Path, proc: subprocess.Popen, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while len(ledger_rows(tmp_path)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"refocusd exited early with {proc.returncode}: {tail(tmp_path, 'stderr')}")
        if time.monotonic() > deadline:
            raise AssertionError(f"only {len(ledger_rows(tmp_path))} of {n} frames after {timeout} s")
        time.sleep(0.1)


def start(config: Path) -> subprocess.Popen:
    # Console logs go to files: an unread pipe would fill up and block the daemon.
    n = len(list(config.parent.glob("stdout*.txt")))
    out = open(config.parent / f"stdout{n}.txt", "w")  # noqa: SIM115 - closed with the process
    err = open(config.parent / f"stderr{n}.txt", "w")  # noqa: SIM115
    return subprocess.Popen([*REFOCUSD, "run", "-c", str(config)], stdout=out, stderr=err, cwd=config.parent)


def tail(config_dir: Path, name: str) -> str:
    files = sorted(config_dir.glob(f"{name}*.txt"))
    return files[-1].read_text()[-3000:] if files else ""


def test_sigkill_mid_burst_then_restart_processes_every_file_exactly_once(tmp_path):
    watch_dir = tmp_path / "export"
    watch_dir.mkdir()
    config = write_config(tmp_path, watch_dir)
    proc = start(config)
    try:
        pixels = noise(seed=1)
        for i in range(FILES):
            pixels[0, 0] = i
            write_tiff(watch_dir / f"well B{i % 4 + 1}" / f"scan_t{i // 4 + 1:03d}xy{i % 4 + 1:02d}c1.tif", pixels)
        wait_rows(tmp_path, proc, 40)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        killed_at = len(ledger_rows(tmp_path))
        assert killed_at < FILES, "the kill must land mid-burst"
        raw = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watch_dir.rglob("*.tif")}

        proc = start(config)
        wait_rows(tmp_path, proc, FILES)
        time.sleep(1.5)  # a rescan or late event must not add anything
        began = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert proc.returncode == 0, tail(tmp_path, "stderr")
        assert time.monotonic() - began < 20, "SIGTERM ends the watch promptly"
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = ledger_rows(tmp_path)
    uris = [uri for uri, _ in rows]
    assert len(uris) == FILES == len(set(uris)), "every file exactly once"
    assert set(uris) == {str(p) for p in raw}
    assert {outcome for _, outcome in rows} <= {"accepted", "reconstruction_queued", "reconstructed", "not_improved"}
    summary = json.loads(tail(tmp_path, "stdout").strip().splitlines()[-1])
    assert summary["event"] == "run.summary" and summary["stopped"] is True
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in watch_dir.rglob("*.tif")} == raw
    assert sorted(p.suffix for p in watch_dir.rglob("*") if p.is_file()) == [".tif"] * FILES, "nothing written there"
    logged = [json.loads(line)["event"] for line in (tmp_path / "logs" / "refocusd.jsonl").read_text().splitlines()]
    assert "watcher.heartbeat" in logged and "watcher.started" in logged
    for output in (tmp_path / "out").rglob("*.ome.tif"):
        assert output.parent.name.startswith("well B"), "outputs mirror the export folder's layout"
