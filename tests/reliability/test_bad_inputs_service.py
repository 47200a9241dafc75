"""The image corpus (bad_inputs.py) dropped into the folder a running `refocusd run` watches
(NIS-Elements export driver): every bad file is quarantined in the ledger with its reason,
the good files around them are classified, and the daemon keeps running until SIGTERM."""

from __future__ import annotations

import hashlib
import signal

import tifffile
from bad_inputs import GOOD, IMAGE_CASES, write_images
from daemon_process import ledger_rows, log_events, start, wait_until


def test_the_corpus_in_a_watched_folder_is_quarantined_and_the_daemon_goes_on(tmp_path):
    export = tmp_path / "export"
    export.mkdir()
    config = tmp_path / "refocusd.toml"
    config.write_text(f"""
[service]
experiment = "corpus"
state_dir = "state"
output_root = "out"
[driver]
kind = "nis"
[driver.nis]
watch_dir = "{export}"
settle_s = 0.3
give_up_s = 2.0
rescan_interval_s = 2.0
[models]
device = "cpu"
[logging]
format = "json"
file = "logs/refocusd.jsonl"
""")
    proc = start(config)
    try:
        wait_until(proc, lambda: any(e["event"] == "daemon.started" for e in log_events(tmp_path)), "start-up")
        tifffile.imwrite(export / "before_t01.tif", GOOD)
        # The watcher takes the NIS export formats (*.tif, *.tiff, *.nd2); PNG/JPEG are ignored.
        bad = {k: p for k, p in write_images(export / "bad").items() if p.suffix in (".tif", ".nd2")}
        # Other pixels: an identical copy would count as a move of the first file.
        tifffile.imwrite(export / "after_t02.tif", GOOD[::-1].copy())
        hashes = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in export.rglob("*") if p.is_file()}

        def all_seen() -> bool:
            rows = ledger_rows(tmp_path, "SELECT source_uri FROM frames")
            return {str(p) for p in [*bad.values(), export / "before_t01.tif", export / "after_t02.tif"]} <= {
                r[0].split("#")[0] for r in rows
            }

        wait_until(proc, all_seen, "every file of the corpus in the ledger", timeout=180)
        assert proc.poll() is None, "the daemon must keep running"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "Traceback" not in err

    rows = ledger_rows(tmp_path, "SELECT source_uri, outcome, reason, label FROM frames")
    by_file = {}
    for uri, outcome, reason, label in rows:
        by_file.setdefault(uri.split("#")[0], []).append((outcome, reason, label))
    for name in ("before_t01.tif", "after_t02.tif"):
        assert [label for _, _, label in by_file[str(export / name)]] in (["focused"], ["defocused"])
    for kind, path in bad.items():
        outcomes = by_file[str(path)]
        assert [o for o, _, _ in outcomes] == ["quarantined"], (kind, outcomes)
        assert outcomes[0][1], f"{kind}: quarantined without a reason"
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in export.rglob("*") if p.is_file()}
    assert after == hashes, "the export folder is never modified"
    assert len(bad) == len([name for name, _ in IMAGE_CASES.values() if name.endswith((".tif", ".nd2"))])
