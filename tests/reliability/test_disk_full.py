"""Disk full on the output volume: jobs stay queued, a clear error is logged, and work
resumes when space returns; nothing is lost and no attempt is burnt.

The output root is a tmpfs of its own (32 MiB) filled to the last byte. Where mounting is
not allowed (an unprivileged CI container) the same scenario runs in-process with ENOSPC
injected at the writer's TIFF write instead; the test says which one ran.
"""

from __future__ import annotations

import errno
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest
import tifffile
from daemon_process import ledger_rows, log_events, start, wait_until, write_config

EXTRA = "[reconstruction]\ndisk_full_retry_s = 0.3\n"


@pytest.fixture
def small_volume(tmp_path):
    volume = tmp_path / "volume"
    volume.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(volume)],
                             capture_output=True, text=True).returncode == 0
    yield volume if mounted else None
    if mounted:
        subprocess.run(["umount", "-l", str(volume)], check=False)


def fill(volume: Path) -> Path:
    """Fill the volume to the last byte (unbuffered writes, smaller and smaller)."""
    filler = volume / "filler.bin"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 20, 65536, 4096, 512, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def jobs(tmp_path: Path) -> list[tuple]:
    return ledger_rows(tmp_path, "SELECT state, attempts, output_path FROM jobs")


def assert_all_done_and_readable(rows: list[tuple]) -> None:
    assert rows and {state for state, _, _ in rows} == {"done"}, rows
    assert {attempts for _, attempts, _ in rows} == {1}, "disk-full waits must not count as attempts"
    for _, _, out in rows:
        tifffile.imread(out)


def test_full_output_volume_keeps_jobs_queued_until_space_returns(tmp_path, small_volume):
    if small_volume is None:
        _run_with_injected_enospc(tmp_path)
        return
    config = write_config(tmp_path, miss_rate=0.5, timepoints=2, output_root=str(small_volume / "out"), extra=EXTRA)
    filler = fill(small_volume)
    proc = start(config)
    try:
        wait_until(proc, lambda: any(e["event"] == "reconstruct.disk_full" for e in log_events(tmp_path)),
                   "a reconstruct.disk_full error in the log")
        time.sleep(1.0)  # several retries while still full
        waiting = jobs(tmp_path)
        assert waiting and all(state in ("queued", "running") for state, _, _ in waiting), waiting
        assert all(attempts <= 1 for _, attempts, _ in waiting)
        event = next(e for e in log_events(tmp_path) if e["event"] == "reconstruct.disk_full")
        assert event["level"] == "error" and "no space left on device" in event["error"]
        filler.unlink()  # space returns
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert_all_done_and_readable(jobs(tmp_path))


def _run_with_injected_enospc(tmp_path: Path) -> None:
    """Fallback: mounting is not permitted here, so tifffile's write raises ENOSPC."""
    import refocusd.daemon.output.writer as writer
    from refocusd.config import load_settings
    from refocusd.daemon.service import Service

    config = write_config(tmp_path, miss_rate=0.5, timepoints=2, extra=EXTRA)
    settings = load_settings(config)
    full = threading.Event()
    full.set()
    refused = []
    real_tifffile = writer.tifffile

    class FullDisk:  # the writer's view of tifffile only; raw frames still get written
        def __getattr__(self, name):
            return getattr(real_tifffile, name)

        def imwrite(self, *args, **kwargs):
            if full.is_set():
                refused.append(1)
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_tifffile.imwrite(*args, **kwargs)

    writer.tifffile = FullDisk()
    service = Service(settings)
    try:
        service.start()
        runner = threading.Thread(target=service.run)
        runner.start()
        deadline = time.monotonic() + 240
        while len(refused) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(refused) >= 3, "the writer was never reached"
        waiting = jobs(tmp_path)
        assert waiting and all(state in ("queued", "running") for state, _, _ in waiting)
        full.clear()
        runner.join(600)
        assert not runner.is_alive()
    finally:
        writer.tifffile = real_tifffile
        service.close()
    assert_all_done_and_readable(jobs(tmp_path))
