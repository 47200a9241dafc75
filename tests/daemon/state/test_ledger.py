"""The ledger against real SQLite files: uniqueness, atomicity, the job queue, crashes, locks."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from refocusd.daemon.state.ledger import (
    MAX_INTERRUPTIONS,
    SCHEMA_VERSION,
    DuplicateSource,
    FrameRecord,
    Ledger,
    LedgerCorrupt,
    LedgerError,
    LedgerLocked,
)
from refocusd.drivers import Coordinates, Frame, SimulatedClock, SourceRef
from refocusd.models import Verdict

RUN = "run-1"


def make_frame(i: int, *, well: str = "A01", t: int = 0, retry: int = 0) -> Frame:
    return Frame(
        pixels=np.zeros((4, 4), np.uint8),
        coords=Coordinates(plate="P1", well=well, position=i % 3, t=t, z_index=0, channel="BF"),
        source=SourceRef(uri=f"/data/exp/img_{i:04d}.tif", page=None if i % 2 else 0),
        acquired_at=1_767_225_600.0 + i,
        scheduled_at=1_767_225_600.0 + i,
        deadline=1_767_225_660.0 + i,
        z_um=1.5,
        retry=retry,
        experiment="exp",
    )


def verdict(p: float) -> Verdict:
    return Verdict(
        p_focused=p,
        label="focused" if p >= 0.5 else "defocused",
        model_id="sdcnn@1",
        latency_s=0.004,
    )


def rec(i: int, *, action: str = "accept", outcome: str = "accepted", p: float = 0.9, **kw):
    return FrameRecord.from_frame(
        make_frame(i), run_id=RUN, verdict=verdict(p), action=action, outcome=outcome, **kw
    )


@pytest.fixture
def clock() -> SimulatedClock:
    return SimulatedClock()


@pytest.fixture
def ledger(tmp_path: Path, clock: SimulatedClock):
    with Ledger.open(tmp_path / "state" / "ledger.db", clock=clock) as led:
        led.start_run(RUN, "exp", json.dumps({"k": 1}), {"refocusd": "0.1.0"})
        yield led


def test_open_creates_parents_wal_and_schema(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "ledger.db"
    with Ledger.open(path):
        pass
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "frames", "jobs"} <= tables
    raw.close()
    with Ledger.open(path) as again:  # re-opening an up-to-date ledger migrates nothing
        assert again.counts()["frames"] == 0


def test_frame_round_trip_uses_frame_verdict_and_clock(ledger: Ledger, clock) -> None:
    clock.advance(5.0)
    fid = ledger.record_frame(rec(3, decided_ms=12.5))
    (row,) = ledger.frames(run_id=RUN)
    assert row["id"] == fid
    assert row["source_key"] == "/data/exp/img_0003.tif"
    assert (row["plate"], row["well"], row["position"], row["channel"]) == ("P1", "A01", 0, "BF")
    assert row["p_focused"] == pytest.approx(0.9) and row["label"] == "focused"
    assert row["classify_ms"] == pytest.approx(4.0)  # from the verdict's latency
    assert row["decided_ms"] == 12.5 and row["deadline"] == 1_767_225_663.0
    assert row["created_at"] == clock.now()
    assert ledger.frame_id_for_source("/data/exp/img_0003.tif") == fid
    assert ledger.frame_id_for_source("/nope") is None


def test_duplicate_source_rejected_even_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as led:
        led.start_run(RUN, "exp", "{}", {})
        fid = led.record_frame(rec(2))
        with pytest.raises(DuplicateSource) as info:
            led.record_frame(rec(2, outcome="refocusing"))
        assert info.value.frame_id == fid
    with Ledger.open(path) as led:
        assert led.has_source(SourceRef("/data/exp/img_0002.tif", page=0).key)
        with pytest.raises(DuplicateSource):
            led.record_quarantine(run_id=RUN, source=SourceRef("/data/exp/img_0002.tif", page=0),
                                  reason="again")
        assert [r["outcome"] for r in led.frames()] == ["accepted"]


def test_record_and_enqueue_is_one_transaction(ledger: Ledger) -> None:
    fid, jid = ledger.record_frame_and_enqueue(
        rec(1, action="reconstruct", outcome="refocusing", p=0.1),
        "missed_timepoint", {"uri": "/data/exp/img_0001.tif", "t": 0}, max_attempts=2,
    )
    (row,) = ledger.frames()
    assert row["id"] == fid and row["outcome"] == "reconstruction_queued"
    job = ledger.job(jid)
    assert job is not None and job["state"] == "queued" and job["payload"]["t"] == 0

    # The job insert fails after the frame insert: the frame must be rolled back with it.
    with pytest.raises(LedgerError, match="not JSON"):
        ledger.record_frame_and_enqueue(
            rec(5, action="reconstruct", outcome="refocusing", p=0.1),
            "missed_timepoint", {"pixels": object()},
        )
    with pytest.raises(LedgerError, match="unknown job reason"):
        ledger.record_frame_and_enqueue(
            rec(5, action="reconstruct", outcome="refocusing", p=0.1), "because", {}
        )
    assert not ledger.has_source("/data/exp/img_0005.tif")
    assert ledger.counts()["frames"] == 1 and ledger.queue_depth() == 1


def test_claim_complete_and_fail_with_retries(ledger: Ledger, clock) -> None:
    ids = []
    for i in range(3):
        clock.advance(1.0)
        ids.append(ledger.record_frame_and_enqueue(
            rec(i, action="reconstruct", outcome="refocusing", p=0.2),
            "no_stage_control", {"i": i}, max_attempts=2,
        ))
    first = ledger.claim_job()
    assert first is not None
    assert (first.id, first.attempts, first.payload) == (ids[0][1], 1, {"i": 0})
    ledger.complete_job(first.id, "/out/img_0000.reconstructed.ome.tif")
    assert ledger.job(first.id)["state"] == "done"
    assert next(ledger.frames(outcome="reconstructed"))["id"] == ids[0][0]
    with pytest.raises(LedgerError, match="not running"):
        ledger.complete_job(first.id, "/again")

    second = ledger.claim_job()
    assert second is not None and second.id == ids[1][1]  # oldest first
    assert ledger.fail_job(second.id, "boom 1") == "queued"
    again = ledger.claim_job()  # a retried job keeps its place: still the oldest
    assert again is not None and again.id == second.id and again.attempts == 2
    assert again.last_error == "boom 1"
    assert ledger.fail_job(again.id, "boom 2") == "failed"
    failed_frame = ledger.frames(outcome="reconstruction_failed")
    assert [(f["id"], f["reason"]) for f in failed_frame] == [(ids[1][0], "boom 2")]
    assert ledger.job(second.id)["finished_at"] is not None
    last = ledger.claim_job()
    assert last is not None and last.id == ids[2][1] and last.attempts == 1
    assert ledger.claim_job() is None
    assert ledger.queue_depth() == 1  # the one running
    with pytest.raises(LedgerError, match="is failed, not running"):
        ledger.fail_job(second.id, "again")


CRASHER = textwrap.dedent(
    """
    import json, os, signal, sys
    from refocusd.daemon.state.ledger import FrameRecord, Ledger
    from refocusd.drivers import Coordinates, SourceRef
    led = Ledger.open(sys.argv[1])
    led.start_run("crash-run", "exp", "{}", {})
    for i, attempts in enumerate((3, 1)):
        rec = FrameRecord(run_id="crash-run", source_key=f"src-{i}", source_uri=f"src-{i}",
                          action="reconstruct", outcome="refocusing")
        led.record_frame_and_enqueue(rec, "missed_timepoint", {"i": i}, max_attempts=attempts)
    print(json.dumps([led.claim_job().id, led.claim_job().id]), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # a real crash: no close, no checkpoint
    """
)


def test_requeue_running_after_a_real_crash(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    proc = subprocess.run([sys.executable, "-c", CRASHER, str(path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    claimed = json.loads(proc.stdout.splitlines()[-1])  # after structlog's default output
    with Ledger.open(path) as led:
        assert led.counts()["jobs"]["running"] == 2  # committed before the kill, nothing lost
        assert led.requeue_running() == 2  # a crash is not a failed attempt
        assert led.counts()["jobs"] == {"queued": 2, "running": 0, "done": 0, "failed": 0}
        job = led.claim_job()
        assert job is not None and job.id == claimed[0] and job.attempts == 1
        assert "interrupted 1 time" in (job.last_error or "")
        assert led.requeue_running() == 1  # idempotent with respect to what is running
        # A job running at every crash is taken to cause them: failed at the budget.
        interrupted = {claimed[0]: 2, claimed[1]: 1}
        while led.counts()["jobs"]["failed"] == 0:
            job = led.claim_job()
            assert interrupted[job.id] == min(interrupted.values()), "least-interrupted first"
            interrupted[job.id] += 1
            led.requeue_running()
        failed = [j for j, n in interrupted.items() if n == MAX_INTERRUPTIONS]
        assert len(failed) == 1 and f"interrupted {MAX_INTERRUPTIONS} time(s)" in led.job(failed[0])["last_error"]
        assert led.counts()["reconstruction_failed"] == 1


def test_counts_by_label_outcome_run_and_job_state(ledger: Ledger) -> None:
    ledger.start_run("run-2", "exp", "{}", {})
    orig = ledger.record_frame(rec(0, action="reacquire", outcome="reacquired", p=0.1))
    ledger.record_frame(FrameRecord.from_frame(  # a first re-acquisition, still blurred
        make_frame(99, retry=1), run_id=RUN, verdict=verdict(0.2), parent_id=orig,
        action="reacquire", outcome="defocused",
    ))
    ledger.record_frame(FrameRecord.from_frame(
        make_frame(100, retry=1), run_id=RUN, verdict=verdict(0.95), parent_id=orig,
        action="accept", outcome="accepted",
    ))
    ledger.record_frame(rec(1))
    _, job_ok = ledger.record_frame_and_enqueue(rec(2, action="reconstruct", outcome="refocusing",
                                                    p=0.3), "missed_timepoint", {}, 1)
    _, job_bad = ledger.record_frame_and_enqueue(rec(3, action="reconstruct", outcome="refocusing",
                                                     p=0.3), "refocus_failed", {}, 1)
    ledger.record_frame_and_enqueue(rec(4, action="reconstruct", outcome="refocusing", p=0.3),
                                    "refocus_failed", {}, 1)
    ledger.record_quarantine(run_id="run-2", source=SourceRef("/data/broken.tif"),
                             reason="truncated file", coords=Coordinates(well="B02"))
    ledger.complete_job(ledger.claim_job().id, "/out/a")
    assert ledger.claim_job().id == job_bad
    ledger.fail_job(job_bad, "oom")
    assert job_ok < job_bad

    counts = ledger.counts()
    # Frame counts are per original (acquired point); re-acquisitions are counted apart.
    assert counts["frames"] == 6 and counts["reacquisitions"] == 2
    assert (counts["focused"], counts["defocused"]) == (1, 4)  # the quarantined has no label
    assert counts["outcomes"]["defocused"] == 0 and counts["outcomes"]["refocusing"] == 0
    assert counts["accepted"] == 1 and counts["reacquired"] == 1
    assert counts["reconstructed"] == 1 and counts["reconstruction_queued"] == 1
    assert counts["failed"] == counts["reconstruction_failed"] == 1
    assert counts["quarantined"] == 1
    assert counts["jobs"] == {"queued": 1, "running": 0, "done": 1, "failed": 1}
    only2 = ledger.counts("run-2")
    assert (only2["frames"], only2["quarantined"], sum(only2["jobs"].values())) == (1, 1, 0)

    errors = ledger.recent_errors(limit=5)
    assert {(e["kind"], e["error"]) for e in errors} == {("job", "oom"),
                                                        ("quarantine", "truncated file")}
    assert ledger.queue_depth() == 1


def test_enqueue_after_failed_refocus_updates_the_original(ledger: Ledger) -> None:
    fid = ledger.record_frame(rec(7, action="reacquire", outcome="refocusing", p=0.1))
    ledger.update_outcome(fid, "refocusing", "autofocus timed out")
    jid = ledger.enqueue_reconstruction(fid, "refocus_failed", {"uri": "x"})
    (row,) = ledger.frames()
    assert (row["outcome"], row["reason"]) == ("reconstruction_queued", "autofocus timed out")
    assert ledger.job(jid)["max_attempts"] == 3
    with pytest.raises(LedgerError, match="already has a reconstruction job"):
        ledger.enqueue_reconstruction(fid, "refocus_failed", {})
    with pytest.raises(LedgerError, match="no frame 999"):
        ledger.enqueue_reconstruction(999, "missed_timepoint", {})


def test_recover_interrupted_queues_frames_left_mid_refocus(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as led:
        led.start_run(RUN, "exp", "{}", {})
        stuck = led.record_frame(rec(1, action="reacquire", outcome="refocusing", p=0.1))
        led.record_frame(rec(2))
        queued = led.record_frame_and_enqueue(
            rec(3, action="reconstruct", outcome="refocusing", p=0.1), "missed_timepoint", {}
        )[0]
    with Ledger.open(path) as led:  # the next start
        assert led.recover_interrupted("interrupted", source_root="/data") == 1
        assert led.recover_interrupted("interrupted") == 0  # idempotent
        row = next(led.frames(outcome="reconstruction_queued", action="reacquire"))
        assert (row["id"], row["reason"]) == (stuck, "interrupted")
        job = led.claim_job()
        assert job is not None and job.frame_id == queued  # older job first
        job = led.claim_job()
        assert job is not None and job.frame_id == stuck and job.reason == "interrupted"
        assert job.payload == {
            "source_uri": "/data/exp/img_0001.tif", "source_page": None,
            "coords": {"plate": "P1", "well": "A01", "position": 1, "t": 0, "z_index": 0,
                       "channel": "BF"},
            "acquired_at": 1_767_225_601.0, "experiment": "exp",
            "verdict": {"p_focused": 0.1, "label": "defocused", "model": "sdcnn@1"},
            "source_root": "/data",
        }


def test_invalid_input_is_refused(ledger: Ledger) -> None:
    with pytest.raises(LedgerError, match="unknown outcome"):
        rec(1, outcome="fine")
    with pytest.raises(LedgerError, match="unknown action"):
        rec(1, action="ignore")
    with pytest.raises(LedgerError, match="unknown run"):
        ledger.record_frame(FrameRecord(run_id="nope", source_key="s", source_uri="s",
                                        action="accept", outcome="accepted"))
    with pytest.raises(LedgerError, match="already recorded"):
        ledger.start_run(RUN, "exp", "{}", {})
    with pytest.raises(LedgerError, match="no run"):
        ledger.stop_run("nope", "done")
    with pytest.raises(LedgerError, match="only 'reconstruct'"):
        ledger.record_frame_and_enqueue(rec(1), "missed_timepoint", {})
    ledger.stop_run(RUN, "completed")
    (run,) = ledger.runs()
    assert run["exit_reason"] == "completed" and json.loads(run["config_json"]) == {"k": 1}


def test_corrupt_file_is_a_clear_error_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    garbage = b"this is definitely not sqlite " * 300
    path.write_bytes(garbage)
    with pytest.raises(LedgerCorrupt) as info:
        Ledger.open(path)
    assert str(path) in str(info.value) and "not" in str(info.value)
    assert path.read_bytes() == garbage  # never overwritten


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path):
        pass
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(LedgerError, match="newer refocusd"):
        Ledger.open(path)


def test_write_locked_by_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with Ledger.open(path) as led:
        led.start_run(RUN, "exp", "{}", {})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another writer holds the lock and does not let go
    try:
        with Ledger.open(path, busy_timeout_s=0.2) as led:
            assert led.counts()["frames"] == 0  # WAL: reading still works
            started = time.perf_counter()
            with pytest.raises(LedgerLocked, match="locked by another process") as info:
                led.record_frame(rec(1))
            assert time.perf_counter() - started >= 0.15  # it did wait for the lock
            assert str(path) in str(info.value)
            holder.execute("ROLLBACK")
            led.record_frame(rec(1))  # usable again once the lock is released
            assert led.has_source(rec(1).source_key)
    finally:
        holder.close()


def test_open_locked_exclusively_fails_with_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    holder = sqlite3.connect(path, isolation_level=None)  # a rollback-journal database
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(LedgerLocked, match="is another refocusd using"):
            Ledger.open(path, busy_timeout_s=0.1)
    finally:
        holder.close()


def test_read_only_observer(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with pytest.raises(LedgerError, match="no ledger"):
        Ledger.open(path, read_only=True)
    assert not path.exists()
    with Ledger.open(path) as writer:
        writer.start_run(RUN, "exp", "{}", {})
        writer.record_frame(rec(1))
        with Ledger.open(path, read_only=True) as reader:
            assert reader.counts()["accepted"] == 1
            writer.record_frame(rec(2))
            assert reader.counts()["accepted"] == 2
            with pytest.raises(LedgerError):
                reader.record_frame(rec(3))


def test_two_threads_share_one_ledger(ledger: Ledger) -> None:
    n = 150
    errors: list[BaseException] = []
    done: list[int] = []

    def producer(offset: int) -> None:
        try:
            for i in range(offset, offset + n):
                if i % 5 == 0:
                    ledger.record_frame_and_enqueue(
                        rec(i, action="reconstruct", outcome="refocusing", p=0.2), "missed_timepoint", {"i": i}
                    )
                else:
                    ledger.record_frame(rec(i))
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    def worker(stop: threading.Event) -> None:
        try:
            while not stop.is_set() or ledger.queue_depth():
                job = ledger.claim_job()
                if job is None:
                    time.sleep(0.001)
                    continue
                ledger.complete_job(job.id, f"/out/{job.payload['i']}")
                done.append(job.id)
        except BaseException as exc:
            errors.append(exc)

    stop = threading.Event()
    threads = [threading.Thread(target=producer, args=(k * n,)) for k in range(2)]
    consumer = threading.Thread(target=worker, args=(stop,))
    consumer.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stop.set()
    consumer.join(30)
    assert not errors, errors
    counts = ledger.counts()
    assert counts["frames"] == 2 * n
    assert counts["reconstructed"] == len(done) == len(set(done)) == 2 * n // 5
    assert counts["jobs"]["done"] == 2 * n // 5 and ledger.queue_depth() == 0


def test_closed_ledger_refuses_use(tmp_path: Path) -> None:
    led = Ledger.open(tmp_path / "l.db")
    led.close()
    led.close()  # idempotent
    assert led.closed
    with pytest.raises(LedgerError, match="closed"):
        led.counts()


def test_v2_ledgers_gain_the_nis_fingerprints_table_by_migration(tmp_path: Path) -> None:
    from refocusd.drivers import DriverError
    from refocusd.drivers.nis import FileFingerprints

    fresh, old_driver = tmp_path / "fresh.db", tmp_path / "old-driver.db"
    for path in (fresh, old_driver):
        raw = sqlite3.connect(path)
        raw.execute("PRAGMA journal_mode = WAL")
        raw.close()
    with pytest.raises(DriverError, match="open the ledger first"):
        FileFingerprints(fresh)  # the driver no longer creates tables of its own
    # A ledger of an earlier version whose NIS driver had created the table itself.
    raw = sqlite3.connect(old_driver)
    raw.execute("CREATE TABLE nis_files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,"
                " sha256 TEXT, status TEXT NOT NULL, reason TEXT, seen_at REAL NOT NULL)")
    raw.execute("INSERT INTO nis_files VALUES ('/x/a.tif', 3, 7, NULL, 'quarantined', 'truncated', 1.0)")
    raw.commit()
    raw.close()
    for path in (fresh, old_driver):
        Ledger.open(path).close()
        fingerprints = FileFingerprints(path)
        fingerprints.remember(Path("/x/b.tif"), 5, 9, "ab" * 32, "processed")
        assert fingerprints.paths_with("ab" * 32) == ["/x/b.tif"]
        fingerprints.close()
    kept = FileFingerprints(old_driver)
    assert kept.get(Path("/x/a.tif")).status == "quarantined"  # rows written before are kept
    kept.close()
