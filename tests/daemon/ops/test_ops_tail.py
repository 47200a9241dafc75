"""`refocusd tail` on log files written by refocusd's own logging set-up, rotation included."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import threading
import time

import pytest
import structlog

from refocusd.daemon.ops.logging import configure_logging
from refocusd.daemon.ops.logview import BadFilter, LogFilter, parse_since

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def tail(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*REFOCUSD, "tail", *args, "--no-color"], input=stdin, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def rotating_log(tmp_path):
    """A JSON log through the daemon's real handler, small enough to rotate every ~20 lines."""
    path = tmp_path / "logs" / "refocusd.jsonl"
    configure_logging(level="debug", fmt="json", file=path, file_max_bytes=10_000, file_backups=20,
                      stream=open(tmp_path / "console.log", "w"))  # noqa: SIM115 - closed with the handlers
    yield path, structlog.get_logger("refocusd.test")
    for handler in list(logging.getLogger().handlers):
        handler.close()
        logging.getLogger().removeHandler(handler)
    structlog.reset_defaults()


def write_run(log, n: int) -> None:
    for i in range(n):
        plate = "plate1" if i % 2 == 0 else "plate2"
        log.info("frame.accepted", plate=plate, well=f"A{i % 12 + 1}", position=0, t=i, p_focused=0.97,
                 source=f"/data/{plate}/f{i:05d}.tif", padding="x" * 300)
        if i % 10 == 9:
            log.warning("reconstruct.queued", plate=plate, well="B2", position=1, t=i, reason="missed_timepoint")
        if i % 25 == 24:
            log.error("driver.error", during="reacquire", error="stage timeout")


def test_renders_a_recorded_file_with_combined_filters(rotating_log):
    path, log = rotating_log
    write_run(log, 12)  # fits in one file
    result = tail(str(path))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 13
    first = lines[0]
    assert "INFO" in first and "frame.accepted" in first and "plate1/A1#0 t0" in first and "p_focused=0.97" in first
    assert not first.lstrip().startswith("{"), "readable lines, not JSON"
    only = tail(str(path), "--level", "warning", "--event", "reconstruct.*", "--plate", "plate2")
    assert only.stdout.splitlines() == [line for line in lines if "reconstruct.queued" in line and "plate2/" in line]
    assert len(only.stdout.splitlines()) == 1
    assert tail(str(path), "--level", "error").stdout == ""
    assert tail(str(path), "--since", "1h").stdout.splitlines() == lines
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    assert tail(str(path), "--since", future).stdout == ""


def test_reads_stdin_like_journalctl_output(rotating_log):
    path, log = rotating_log
    write_run(log, 10)
    journal = "-- Boot 1a2b --\n" + path.read_text()  # journalctl -o cat also shows non-JSON lines
    everything = tail("-", stdin=journal)
    assert everything.stdout.splitlines()[0] == "-- Boot 1a2b --"
    assert len(everything.stdout.splitlines()) == 12
    filtered = tail("-", "--event", "reconstruct.queued", stdin=journal)
    assert len(filtered.stdout.splitlines()) == 1 and "missed_timepoint" in filtered.stdout


def test_rotated_backups_are_read_oldest_first(rotating_log):
    path, log = rotating_log
    write_run(log, 60)
    backups = sorted(path.parent.glob("refocusd.jsonl.*"))
    assert len(backups) >= 2, "the test needs real rotations"
    result = tail(str(path), "--rotated", "--event", "frame.accepted")
    ts = [int(line.split(" t")[1].split()[0]) for line in result.stdout.splitlines()]
    assert ts == list(range(60)), "every line once, in order, across the rotated files"


def test_follow_keeps_going_across_rotations(rotating_log):
    path, log = rotating_log
    log.info("daemon.started", driver="simulated")
    proc = subprocess.Popen([*REFOCUSD, "tail", str(path), "--follow", "--event", "frame.accepted", "--no-color"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        time.sleep(2.5)  # the tail process starts and reaches the end of the file
        for _batch in range(4):  # written while tail follows: several rotations
            write_run(log, 15)
            time.sleep(0.3)
        deadline = time.monotonic() + 30
        while len(seen) < 60 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(10)
    assert len(list(path.parent.glob("refocusd.jsonl.*"))) >= 3
    assert len(seen) == 60, f"{len(seen)} lines"
    ts = [int(line.split(" t")[1].split()[0]) for line in seen]
    assert ts == [t for _ in range(4) for t in range(15)]


def test_filter_arguments_are_checked():
    now = dt.datetime(2026, 5, 1, 12, 0, tzinfo=dt.UTC)
    assert parse_since("90m", now=now) == now - dt.timedelta(minutes=90)
    assert parse_since("2026-05-01T08:00", now=now) == dt.datetime(2026, 5, 1, 8, 0, tzinfo=dt.UTC)
    with pytest.raises(BadFilter):
        parse_since("last tuesday", now=now)
    with pytest.raises(BadFilter):
        LogFilter(min_level="loud")
    bad = tail("nothing.jsonl", "--level", "loud")
    assert bad.returncode == 2 and "--level" in bad.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = tail(str(tmp_path / "nope.jsonl"))
    assert result.returncode == 2 and "no log file" in result.stderr
