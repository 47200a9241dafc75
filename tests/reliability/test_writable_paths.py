"""Folders refocusd must write to (#14.5, #14.15, #14.24): checked before any model loads,
exit 2 naming the key and the folder; at run time a write-protected output root is treated
like a full disk (jobs stay queued, the service says it is unhealthy, loudly)."""

from __future__ import annotations

import json
import stat
import subprocess
import time
from pathlib import Path

from daemon_process import REFOCUSD, ledger_rows, log_events, start, wait_until, write_config

# A model that does not exist: if the path checks ran after the models, this would be the error.
NO_MODEL = '[models]\nclassifier = "no-such-model-folder"\n'


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REFOCUSD, *args], capture_output=True, text=True, timeout=timeout)


def assert_refused(result: subprocess.CompletedProcess[str], key: str, folder: Path) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    text = " ".join(result.stderr.split())
    assert key in text and str(folder) in text, text
    assert "Traceback" not in result.stderr and "no-such-model-folder" not in text


def config_without_models(tmp_path: Path, **kwargs) -> Path:
    config = write_config(tmp_path, **kwargs)
    config.write_text(config.read_text().replace('[models]\ndevice = "cpu"\n', NO_MODEL))
    return config


def test_read_only_output_root_is_refused_before_models_load(tmp_path, read_only_switch):
    out = tmp_path / "out"
    read_only_switch(out).read_only()
    config = config_without_models(tmp_path)
    assert_refused(cli("run", "--config", str(config)), "service.output_root", out)
    assert_refused(cli("config", "check", str(config)), "service.output_root", out)


def test_unusable_state_dir_and_log_file_are_refused_before_models_load(tmp_path, read_only_switch):
    config = config_without_models(tmp_path)
    state = tmp_path / "state"
    read_only_switch(state).read_only()
    assert_refused(cli("run", "--config", str(config)), "service.state_dir", state)
    assert_refused(cli("config", "check", str(config)), "service.state_dir", state)

    # state_dir under a regular file; the log file a folder; the log under a regular file
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cases = {
        "service.state_dir": ('state_dir = "state"', 'state_dir = "a-file/state"', blocker / "state"),
        "logging.file": ('file = "logs/refocusd.jsonl"', 'file = "logs"', tmp_path / "logs"),
    }
    (tmp_path / "logs").mkdir(exist_ok=True)
    for key, (old, new, named) in cases.items():
        config.write_text(config_without_models(tmp_path).read_text().replace(old, new))
        assert_refused(cli("run", "--config", str(config)), key, named)
        assert_refused(cli("config", "check", str(config)), key, named)
    config.write_text(config_without_models(tmp_path).read_text().replace(
        'file = "logs/refocusd.jsonl"', 'file = "a-file/refocusd.jsonl"'))
    assert_refused(cli("run", "--config", str(config)), "logging.file", blocker / "refocusd.jsonl")


def test_write_protected_output_root_at_run_time_keeps_jobs_queued(tmp_path, read_only_switch):
    volume = tmp_path / "volume"
    switch = read_only_switch(volume)
    config = write_config(tmp_path, miss_rate=0.5, timepoints=2, output_root=str(volume),
                          extra="[reconstruction]\ndisk_full_retry_s = 0.3\n[health]\ninterval_s = 0.3\n")
    proc = start(config)
    try:
        # The lock is taken after the classifier loads and before the first frame: the start-up
        # check has passed; the reconstructor loads only on the first job.
        wait_until(proc, lambda: (tmp_path / "state" / "refocusd.lock").exists(), "the state lock")
        switch.read_only()
        wait_until(proc, lambda: any(e["event"] == "reconstruct.output_unwritable" for e in log_events(tmp_path)),
                   "a reconstruct.output_unwritable error in the log")
        event = next(e for e in log_events(tmp_path) if e["event"] == "reconstruct.output_unwritable")
        assert event["level"] == "error" and str(volume) in event["error"]
        time.sleep(1.0)  # several retries while still read-only
        waiting = ledger_rows(tmp_path, "SELECT state, attempts FROM jobs")
        assert waiting and {s for s, _ in waiting} <= {"queued", "running"}, waiting
        assert all(attempts <= 1 for _, attempts in waiting), "a blocked output must not use up attempts"
        status = cli("status", "--config", str(config), "--json")
        assert status.returncode == 1, status.stdout + status.stderr
        assert any("output root" in p and str(volume) in p for p in json.loads(status.stdout)["problems"])
        switch.writable()
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    rows = ledger_rows(tmp_path, "SELECT state, attempts FROM jobs")
    assert rows and {s for s, _ in rows} == {"done"} and {a for _, a in rows} == {1}, rows
    assert any(e["event"] == "health.unhealthy" and any("output root" in p for p in e["problems"])
               for e in log_events(tmp_path))


def test_state_is_private_outside_systemd(tmp_path):
    """The unit's UMask=0027 / StateDirectoryMode=0750, also when run by hand."""
    config = write_config(tmp_path, miss_rate=0.0)
    config.write_text(config.read_text().replace('[plate]\nwells = [', '[plate]\nwells = ["A1"] #'))
    done = cli("run", "--config", str(config), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    state = tmp_path / "state"
    for path in (state, *state.iterdir()):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o007 == 0, f"{path.name} is {oct(mode)}: readable by every user"
    assert stat.S_IMODE(state.stat().st_mode) == 0o750
