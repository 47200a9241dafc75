"""The service as users run it: the real CLI in a subprocess, real signals."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import tifffile

from daemon_process import REFOCUSD, WELLS, frame_rows, start, wait_for_frames, write_config


def test_sigkill_mid_run_then_restart_loses_nothing_and_repeats_nothing(tmp_path):
    config = write_config(tmp_path, miss_rate=0.3, timepoints=2)
    for kill_after in (5, 20, 35):
        proc = start(config)
        wait_for_frames(tmp_path, proc, kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert proc.returncode == -signal.SIGKILL
    final = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr[-3000:]

    rows = frame_rows(tmp_path)
    originals = [(w, p, t) for w, p, t, parent, _, _ in rows if parent is None]
    assert sorted(originals) == sorted({(w, 0, t) for w in WELLS for t in range(2)}), "each point exactly once"
    keys = [r[5] for r in rows]
    assert len(keys) == len(set(keys))
    assert not [r for r in rows if r[4] in ("refocusing", "pending", "reconstruction_queued")], "nothing left half-done"

    db = tmp_path / "state" / "ledger.sqlite"
    with sqlite3.connect(db) as conn:
        states = dict(conn.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall())
        outputs = [Path(p) for (p,) in conn.execute("SELECT output_path FROM jobs WHERE state='done'")]
    assert set(states) <= {"done"}, states
    for out in outputs:
        assert out.is_file() and Path(str(out) + ".json").is_file()
        tifffile.imread(out)  # complete, readable
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == [], "no temporary or half-written output may remain"


def test_sigterm_stops_gracefully_and_resumes(tmp_path):
    config = write_config(tmp_path, miss_rate=0.0)
    proc = start(config)
    wait_for_frames(tmp_path, proc, 3)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["stopped"] is True and 3 <= summary["frames"] < len(WELLS)
    events = [json.loads(line)["event"] for line in (tmp_path / "logs" / "refocusd.jsonl").read_text().splitlines()]
    assert "daemon.started" in events and "daemon.stopping" in events

    status = subprocess.run([*REFOCUSD, "status", "--config", str(config), "--json"], capture_output=True, text=True)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counts"]["frames"] == summary["frames"]

    rest = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True, timeout=600)
    assert rest.returncode == 0
    assert len(frame_rows(tmp_path)) == len(WELLS)


def test_run_with_bad_config_exits_2_without_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[refocus]\nstrategy = 'guess'\n")
    result = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2
    assert "refocus.strategy" in result.stderr and "Traceback" not in result.stderr


def test_demo_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run(
        [*REFOCUSD, "demo", "--out", str(out), "--wells", "6", "--timepoints", "2", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    for key in ("frames", "focused", "defocused", "reacquired", "reconstructed", "quarantined", "wall_s"):
        assert key in summary
    assert summary["frames"] == 6 + 4 * 3 * 2  # plate scan + 4 wells x 3 positions x 2 points
    assert (out / "state" / "ledger.sqlite").is_file()
    assert (out / "logs" / "refocusd.jsonl").is_file()
    # Running it again replaces its own folder, but never a folder it did not make.
    again = subprocess.run([*REFOCUSD, "demo", "--out", str(out), "--wells", "1", "--timepoints", "1", "--json"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.docx").write_text("precious")
    refused = subprocess.run([*REFOCUSD, "demo", "--out", str(foreign)], capture_output=True, text=True)
    assert refused.returncode == 2 and (foreign / "thesis.docx").exists()


def test_run_refuses_to_start_with_a_tampered_model(tmp_path):
    import shutil

    from refocusd.models.store import default_folder

    tampered = tmp_path / "model"
    shutil.copytree(default_folder("reconstructor"), tampered)
    weights = tampered / "model.keras"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace('device = "cpu"', f'device = "cpu"\nreconstructor = "{tampered}"'))
    result = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "does not match its card" in result.stderr and "Traceback" not in result.stderr
    assert not frame_rows(tmp_path), "nothing may be processed by a service that cannot reconstruct"
