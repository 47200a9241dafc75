"""Odd files in a watched NIS export folder, through a real `refocusd run` (#14.7, #14.8,
#14.9, #14.19): a stack written page by page, identical pixels under two names, a move, a
name that is not valid UTF-8, a temporary file renamed into place. Each plane is recorded
once, every acquired point is recorded, and no file stops the service (nor its restart)."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import noise, write_tiff
from test_nis_service import REFOCUSD, start, tail

pytestmark = pytest.mark.slow


def config_for(tmp_path: Path) -> Path:
    config = tmp_path / "refocusd.toml"
    config.write_text("""
[service]
experiment = "nis-odd"
state_dir = "state"
output_root = "out"
[driver]
kind = "nis"
[driver.nis]
watch_dir = "export"
settle_s = 0.3
give_up_s = 3.0
rescan_interval_s = 1.0
heartbeat_s = 1.0
[models]
device = "cpu"
[logging]
format = "json"
file = "logs/refocusd.jsonl"
""")
    return config


def frames(tmp_path: Path) -> list[tuple]:
    db = tmp_path / "state" / "ledger.sqlite"
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT source_uri, source_page, outcome, reason, t FROM frames").fetchall()
    except sqlite3.OperationalError:
        return []


def wait_for(proc, condition, what: str, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"refocusd exited ({proc.returncode}) waiting for {what}"
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s; frames {frames(proc.tmp)}"
        time.sleep(0.1)


def tiff_bytes(page: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, page, photometric="minisblack", metadata=None)
    return buffer.getvalue()


def test_odd_files_are_each_recorded_once_and_none_stops_the_service(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    config = config_for(tmp_path)
    proc = start(config)
    proc.tmp = tmp_path
    try:
        wait_for(proc, lambda: "watcher.started" in (tmp_path / "logs" / "refocusd.jsonl").read_text()
                 if (tmp_path / "logs" / "refocusd.jsonl").exists() else False, "the watcher", 120)
        # 17: the health written at start (before the watch began) is no false alarm
        probe = subprocess.run([*REFOCUSD, "status", "-c", str(config), "--json"], capture_output=True, text=True,
                               timeout=60)
        assert probe.returncode == 0, probe.stdout + probe.stderr

        # 9: a name that is not valid UTF-8 (Latin-1 from an old share), next to a good file:
        # it cannot be recorded under its own name, so it is quarantined, saying how to fix it
        bad_name = os.fsencode(export) + b"/caf\xe9_t005.tif"
        with open(bad_name, "wb") as handle:
            handle.write(tiff_bytes(noise(seed=5)))
        write_tiff(export / "good_t001.tif", noise(seed=1))
        wait_for(proc, lambda: len(frames(tmp_path)) >= 2, "both files in the ledger")

        # 8: the same pixels under two names are two acquired points
        same = noise(seed=2)
        write_tiff(export / "same_xy01_t001.tif", same)
        write_tiff(export / "same_xy02_t001.tif", same)
        wait_for(proc, lambda: len(frames(tmp_path)) >= 4, "both identical files")
        # ...but a move is recognised: not recorded again
        os.rename(export / "same_xy01_t001.tif", export / "moved_xy01_t001.tif")

        # 7: a stack written page by page, pausing longer than settle_s between pages
        planes = [noise(seed=10 + i) for i in range(3)]
        stack = export / "stack_xy03.tif"
        for plane in planes:
            with tifffile.TiffWriter(stack, append=True) as tif:
                tif.write(plane, photometric="minisblack", metadata=None)
            time.sleep(1.2)

        # 19: write-then-rename: the temporary name is not a frame
        (export / "tmp_write.tif").write_bytes(tiff_bytes(noise(seed=20)))
        time.sleep(0.2)  # seen, not yet settled (settle_s 0.3)
        os.rename(export / "tmp_write.tif", export / "final_t002.tif")
        wait_for(proc, lambda: any(Path(u).name == "final_t002.tif" for u, *_ in frames(tmp_path)), "final_t002.tif")
        time.sleep(2.5)  # rescans and late events must add nothing
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        assert proc.returncode == 0, tail(tmp_path, "stderr")
    finally:
        if proc.poll() is None:
            proc.kill()
    rows = frames(tmp_path)
    by_name: dict[str, list[tuple]] = {}
    for uri, page, outcome, reason, t in rows:
        by_name.setdefault(os.path.basename(uri), []).append((page, outcome, reason, t))
    assert "Traceback" not in tail(tmp_path, "stderr")
    events = [json.loads(line)["event"] for line in (tmp_path / "logs" / "refocusd.jsonl").read_text().splitlines()]
    assert "health.unhealthy" not in events, "no false alarm at start"
    stack_rows = by_name.pop("stack_xy03.tif")
    assert sorted(t for *_, t in stack_rows) == [0, 1, 2], f"each plane once: {stack_rows}"
    assert set(by_name.pop("same_xy01_t001.tif")) and set(by_name.pop("same_xy02_t001.tif"))
    assert "moved_xy01_t001.tif" not in by_name, "a rename is not a new frame"
    assert "tmp_write.tif" not in by_name, "a temporary name is not a frame"
    assert len(by_name.pop("final_t002.tif")) == 1 and len(by_name.pop("good_t001.tif")) == 1
    (odd,) = by_name.pop(next(n for n in by_name if n.startswith("caf")))
    assert odd[1] == "quarantined" and "not valid UTF-8" in odd[2] and "rename" in odd[2], odd
    assert by_name == {}, by_name

    # A restart (as systemd does) does not die on that file either, and records nothing twice.
    again = start(config)
    again.tmp = tmp_path
    try:
        wait_for(again, lambda: sum(1 for line in (tmp_path / "logs" / "refocusd.jsonl").read_text().splitlines()
                     if json.loads(line)["event"] == "watcher.started") >= 2, "the restarted watcher", 120)
        time.sleep(2.5)
        again.send_signal(signal.SIGTERM)
        again.wait(60)
        assert again.returncode == 0, tail(tmp_path, "stderr")
    finally:
        if again.poll() is None:
            again.kill()
    assert sorted(frames(tmp_path), key=repr) == sorted(rows, key=repr)
