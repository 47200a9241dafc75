"""Readiness by (size, mtime) stability, on an injected clock and real files."""

from __future__ import annotations

import os

from refocusd.drivers.nis.settle import SettleTracker


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_ready_only_after_settle_time_without_change(tmp_path):
    clock = Clock()
    tracker = SettleTracker(settle_s=1.0, give_up_s=5.0, now=clock)
    path = tmp_path / "a.tif"
    path.write_bytes(b"12")
    tracker.offer(path)
    assert tracker.poll().ready == []  # first look
    clock.t = 0.9
    assert tracker.poll().ready == []
    path.write_bytes(b"1234")  # grew: the clock starts again
    clock.t = 1.5
    assert tracker.poll().ready == []
    clock.t = 2.4
    assert tracker.poll().ready == []
    clock.t = 2.6
    assert tracker.poll().ready == [path]


def test_not_ready_files_wait_for_change_or_give_up_and_held_files_are_left_alone(tmp_path):
    clock = Clock()
    tracker = SettleTracker(settle_s=0.5, give_up_s=3.0, now=clock)
    bad, busy = tmp_path / "bad.tif", tmp_path / "busy.tif"
    bad.write_bytes(b"x")
    busy.write_bytes(b"y")
    tracker.offer(bad)
    tracker.offer(busy)
    tracker.poll()
    clock.t = 1.0
    assert sorted(tracker.poll().ready) == [bad, busy]
    tracker.not_ready(bad, "truncated")
    tracker.hold(busy)  # in the ready queue behind a burst
    clock.t = 2.0
    assert tracker.poll() == type(tracker.poll())([], [], [])
    clock.t = 10.0
    result = tracker.poll()
    assert result.given_up == [(bad, "truncated")] and result.ready == []
    assert busy in tracker and bad not in tracker
    busy.unlink()
    tracker.not_ready(busy, "gone?")
    assert tracker.poll().vanished == [busy]
    assert len(tracker) == 0 and not os.path.exists(busy)
