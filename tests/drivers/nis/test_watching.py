"""The driver on a real watchdog observer: settle, scan + events, burst, polling, observer
supervision, renames and replaced content. Frames are 128×128 to keep it fast."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from conftest import noise, write_tiff
from structlog.testing import capture_logs


def tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()
    }


def test_existing_and_new_files_are_taken_once_and_never_modified(start_driver, watch_dir):
    write_tiff(watch_dir / "before_t001xy01c1.tif", noise(seed=1))
    collector = start_driver()
    collector.wait_frames(1)
    write_tiff(watch_dir / "sub" / "after_t002XY03C2.tif", noise(seed=2))
    collector.wait_frames(2)
    before = tree_hashes(watch_dir)
    # Touching without changing content, and a rescan, must not give the files again.
    os.utime(watch_dir / "before_t001xy01c1.tif")
    collector.driver._rescan()
    time.sleep(0.8)
    assert len(collector.frames) == 2 and not collector.bad
    by_name = {Path(f.source.uri).name: f for f in collector.frames}
    after = by_name["after_t002XY03C2.tif"]
    assert (after.coords.t, after.coords.position, after.coords.channel) == (1, 2, "c2")
    assert after.metadata["relative_path"] == "sub/after_t002XY03C2.tif"
    assert np.array_equal(after.pixels, noise(seed=2))
    assert tree_hashes(watch_dir) == before, "raw exports are never modified"


def test_file_written_slowly_in_chunks_is_not_read_before_complete(start_driver, watch_dir):
    staging = write_tiff(watch_dir.parent / "staging.tif", noise((256, 256), seed=5))
    data = staging.read_bytes()
    collector = start_driver(settle_s=0.5, give_up_s=5.0)
    target = watch_dir / "slow_t001.tif"
    with open(target, "wb") as out:
        for i in range(0, len(data), len(data) // 8):
            out.write(data[i : i + len(data) // 8])
            out.flush()
            last_write = time.monotonic()
            time.sleep(0.2)  # shorter than settle_s: the writer is still busy
    collector.wait_frames(1, timeout=10)
    (frame,) = collector.frames
    assert collector.taken_at[frame.source.key] >= last_write + 0.5
    assert np.array_equal(frame.pixels, noise((256, 256), seed=5))
    assert not collector.bad


def test_burst_of_1000_files_each_taken_once_in_bounded_memory(start_driver, watch_dir):
    collector = start_driver(settle_s=0.2, keep_pixels=False)
    began = time.monotonic()
    pixels = noise((256, 256), seed=9)  # 128 kB per file, 128 MB through the driver in all
    tracemalloc.start()
    for i in range(1000):
        pixels[0, 0] = i  # distinct content per file
        write_tiff(watch_dir / f"burst_t{i + 1:04d}xy01c1.tif", pixels)
    collector.wait_frames(1000, timeout=60)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 24 * 2**20, f"peak {peak / 2**20:.1f} MB: pixels are held for a few files, not the burst"
    time.sleep(0.5)
    keys = [f.source.key for f in collector.frames]
    assert len(keys) == 1000 == len(set(keys)) and not collector.bad
    assert sorted(f.coords.t for f in collector.frames) == list(range(1000))
    # A stall guard, not a speed target: writing 1000 files under tracemalloc dominates the
    # time; the watcher's throughput is measured by bench/bench_nis.py --driver-only.
    assert time.monotonic() - began < 180


def test_polling_observer_sees_new_files(start_driver, watch_dir):
    # The rescan is an hour away: only the polling observer can report the file.
    collector = start_driver(observer="polling", poll_interval_s=0.2, rescan_interval_s=3600)
    collector.wait(lambda: collector.driver.health().up)
    write_tiff(watch_dir / "polled_t001.tif", noise())
    collector.wait_frames(1, timeout=10)
    assert "polling" in collector.driver.health().detail


def test_dead_polling_observer_is_restarted_and_the_folder_rescanned(start_driver, watch_dir):
    with capture_logs() as logs:
        collector = start_driver(observer="polling", poll_interval_s=0.2, rescan_interval_s=3600, heartbeat_s=0.2)
        collector.wait(lambda: collector.driver.health().up)
        # The share drops (the folder goes away): the polling emitter dies silently.
        dropped = watch_dir.parent / "dropped"
        watch_dir.rename(dropped)
        collector.wait(lambda: not collector.driver.health().up, timeout=10)
        # Health says "down" as soon as the folder is gone (#14.23); the tick then replaces the observer.
        collector.wait(lambda: any(e["event"] == "watcher.died" for e in logs), timeout=10)
        write_tiff(dropped / "while_down_t001.tif", noise(seed=3))
        dropped.rename(watch_dir)  # the share is back, with a file written meanwhile
        collector.wait_frames(1, timeout=15)
        collector.wait(lambda: collector.driver.health().up)
    events = [e["event"] for e in logs]
    assert events.count("watcher.died") == 1 and events.count("watcher.restarted") == 1
    assert events.count("watcher.unavailable") <= 1, "one line per outage, not one per retry"
    beats = [e for e in logs if e["event"] == "watcher.heartbeat"]
    assert beats and beats[-1]["alive"] is True and beats[-1]["restarts"] >= 1


def test_renamed_and_moved_files_are_recognised_replaced_content_is_new(start_driver, watch_dir):
    write_tiff(watch_dir / "a_t001.tif", noise(seed=1))
    with capture_logs() as logs:
        collector = start_driver()
        collector.wait_frames(1)
        (watch_dir / "a_t001.tif").rename(watch_dir / "renamed_t001.tif")
        (watch_dir / "deeper").mkdir()
        shutil.move(watch_dir / "renamed_t001.tif", watch_dir / "deeper" / "moved_t001.tif")
        time.sleep(1.0)
        assert len(collector.frames) == 1, "a rename or move is not a new frame"
        write_tiff(watch_dir / "deeper" / "moved_t001.tif", noise(seed=2))  # new content, same name
        collector.wait_frames(2)
    first, second = collector.frames
    assert second.source.uri == str(watch_dir / "deeper" / "moved_t001.tif")
    assert first.source.key != second.source.key
    events = [e["event"] for e in logs]
    assert "nis.file.moved" in events and "nis.file.replaced" in events


def test_restart_does_not_take_files_again(start_driver, watch_dir):
    write_tiff(watch_dir / "once_t001.tif", noise(seed=4))
    first = start_driver()
    first.wait_frames(1)
    first.driver._stop.set()  # the runner asks for the next frame on stop: the file is remembered
    first.join()
    assert not first.alive()
    second = start_driver()
    time.sleep(1.0)
    assert second.frames == [] and second.bad == []


def test_a_folder_that_appears_later_is_waited_for(start_driver, watch_dir):
    watch_dir.rmdir()
    with capture_logs() as logs:
        collector = start_driver()
        time.sleep(0.5)
        assert not collector.driver.health().up
        write_tiff(watch_dir / "late_t001.tif", noise(seed=6))  # the share is mounted
        collector.wait_frames(1, timeout=10)
    assert [e["event"] for e in logs].count("watcher.unavailable") == 1


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_moved_watch_folder_is_down_until_it_is_back(start_driver, watch_dir, tmp_path, observer):
    """#14.23: a watch folder moved away (or replaced) is 'down', not 'up'; once a folder
    is back at the path the watch resumes there and new files are taken."""
    collector = start_driver(observer=observer, poll_interval_s=0.2)
    write_tiff(watch_dir / "first_t001.tif", noise(seed=1))
    collector.wait_frames(1)
    assert collector.driver.health().up
    watch_dir.rename(tmp_path / "moved-away")
    deadline = time.monotonic() + 10
    while collector.driver.health().up:
        assert time.monotonic() < deadline, "still 'up' after the folder was moved away"
        time.sleep(0.1)
    assert str(watch_dir) in collector.driver.health().detail
    watch_dir.mkdir()  # a new folder at the same path (as a remount or a re-created export)
    write_tiff(watch_dir / "second_t002.tif", noise(seed=2))
    collector.wait_frames(2, timeout=30)
    assert collector.driver.health().up
