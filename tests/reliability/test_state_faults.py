"""The ledger locked by another process or corrupt, a model file corrupt: `refocusd run`
refuses with a clear message (no traceback), touches nothing, and runs once it is fixed."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from daemon_process import REFOCUSD, WELLS, frame_rows, write_config

HOLD_EXCLUSIVE_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(600)
"""


def run(config: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True, timeout=timeout)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_ledger_locked_by_another_process(tmp_path):
    from refocusd.daemon.state.ledger import Ledger

    config = write_config(tmp_path, miss_rate=0.0)
    db = tmp_path / "state" / "ledger.sqlite"
    Ledger.open(db).close()  # an existing ledger, as after an earlier run
    locker = subprocess.Popen([sys.executable, "-c", HOLD_EXCLUSIVE_LOCK, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert locker.stdout.readline().strip() == "locked"
        started = time.monotonic()
        refused = run(config)
        waited = time.monotonic() - started
    finally:
        locker.kill()
        locker.wait()
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "is locked by another process" in refused.stderr and "Traceback" not in refused.stderr
    assert waited >= 10, "it waits for the lock (busy timeout) before giving up"
    assert frame_rows(tmp_path) == []
    again = run(config)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(frame_rows(tmp_path)) == len(WELLS)


def test_corrupt_ledger_is_refused_and_left_alone(tmp_path):
    config = write_config(tmp_path, miss_rate=0.0)
    db = tmp_path / "state" / "ledger.sqlite"
    db.parent.mkdir(parents=True)
    db.write_bytes(b"SQLite format 3\0" + bytes(range(256)) * 64)  # right magic, garbage after
    before = digest(db)
    refused = run(config)
    assert refused.returncode == 3, refused.stderr[-2000:]
    assert "not a usable SQLite database" in refused.stderr and "move it aside" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert digest(db) == before, "a corrupt ledger is evidence: never rewritten"
    db.rename(db.with_suffix(".corrupt"))  # what the message tells the user to do
    again = run(config)
    assert again.returncode == 0, again.stderr[-2000:]


def test_truncated_model_refuses_to_start(tmp_path):
    from refocusd.models.store import default_folder

    for kind in ("classifier", "reconstructor"):
        model = tmp_path / kind
        shutil.copytree(default_folder(kind), model)
        weights = model / "model.keras"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    config = write_config(tmp_path, extra="")
    models = f'classifier = "{tmp_path / "classifier"}"\nreconstructor = "{tmp_path / "reconstructor"}"'
    text = config.read_text().replace('device = "cpu"', f'device = "cpu"\n{models}')
    config.write_text(text)
    refused = run(config)
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "model error" in refused.stderr and "model.keras" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "state" / "ledger.sqlite").exists(), "nothing starts without usable models"
