"""Crash safety: `refocusd run` SIGKILLed 20 times at random moments, restarted each time.

The kills land during classification, ledger writes, reconstructions and output writes
(the run has ~40 reconstruction jobs of ~1 s each, and each kill comes at a random delay
after the restarted daemon has made progress). Afterwards: no frame lost, none processed
twice, no half-written output, every reconstruction done.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from pathlib import Path

import tifffile
from daemon_process import REFOCUSD, WELLS, ledger_rows, start, wait_until, write_config

KILLS = 20
TIMEPOINTS = 4


def progress(tmp_path: Path) -> int:
    """Frames recorded plus jobs finished: grows whenever the daemon gets work done."""
    rows = ledger_rows(
        tmp_path, "SELECT (SELECT count(*) FROM frames) + (SELECT count(*) FROM jobs WHERE state IN ('done', 'failed'))"
    )
    return rows[0][0] if rows else 0


def test_twenty_random_sigkills_lose_nothing_and_repeat_nothing(tmp_path):
    rng = random.Random(7)
    config = write_config(tmp_path, miss_rate=0.4, timepoints=TIMEPOINTS)
    kills_mid_job = 0
    kills = 0
    for _ in range(KILLS):
        before = progress(tmp_path)
        proc = start(config)
        try:
            wait_until(proc, lambda before=before: progress(tmp_path) > before, "progress after restart")
        except BaseException:
            proc.kill()
            raise
        time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is not None:  # finished everything before the kill came
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills += 1
        kills_mid_job += bool(ledger_rows(tmp_path, "SELECT id FROM jobs WHERE state = 'running'"))
    final = subprocess.run([*REFOCUSD, "run", "--config", str(config)], capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stderr[-3000:]
    assert kills >= KILLS - 2, f"the run finished after only {kills} kills: give it more work"
    assert kills_mid_job >= 1, "no kill landed during a reconstruction"

    frames = ledger_rows(tmp_path, "SELECT id, well, position, t, parent_id, outcome, source_key FROM frames")
    points = sorted((w, p, t) for _, w, p, t, parent, _, _ in frames if parent is None)
    assert points == sorted((w, 0, t) for w in WELLS for t in range(TIMEPOINTS)), "each point exactly once"
    keys = [f[6] for f in frames]
    assert len(keys) == len(set(keys)), "a source processed twice"
    raw = {str(p) for p in (tmp_path / "data").rglob("*.tif")}
    assert raw == set(keys), "every raw frame on disk is in the ledger, and nothing else"
    assert not [f for f in frames if f[5] in ("refocusing", "pending", "reconstruction_queued")]

    jobs = ledger_rows(tmp_path, "SELECT frame_id, state, output_path FROM jobs")
    assert jobs and {state for _, state, _ in jobs} == {"done"}, jobs
    assert len({frame_id for frame_id, _, _ in jobs}) == len(jobs), "one job per frame"
    outputs = sorted(Path(p) for _, _, p in jobs)
    assert len(set(outputs)) == len(outputs)
    for out in outputs:
        provenance = json.loads(Path(f"{out}.json").read_text())
        assert Path(provenance["source"]["path"]).is_file()
        assert tifffile.imread(out).shape == (384, 384)  # complete and readable
    written = sorted(p for p in (tmp_path / "out").rglob("*.ome.tif"))
    assert written == outputs, "no output without a job, none missing"
    leftovers = [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name.startswith(".")]
    assert leftovers == [], "no temporary or half-written output may remain"
    print(f"\n{kills} SIGKILLs ({kills_mid_job} during a reconstruction), {len(frames)} frames, "
          f"{len(jobs)} reconstructions, 0 lost, 0 repeated")
