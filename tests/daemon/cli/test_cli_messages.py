"""#14.25: messages and help print as written: brackets are text, not rich markup."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import tifffile

REFOCUSD = [sys.executable, "-m", "refocusd.daemon.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REFOCUSD, *args], capture_output=True, text=True, timeout=180,
                          env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "CUDA_VISIBLE_DEVICES": "-1"})


def test_help_and_errors_keep_their_brackets(tmp_path):
    assert "with a [driver.micromanager] section" in " ".join(run("calibrate", "--help").stdout.split())
    folder = tmp_path / "run[3]"
    folder.mkdir()
    missing = run("classify", str(folder), "--model", str(folder / "sdcnn[gpu]"))
    assert missing.returncode == 2
    assert f"{folder}/sdcnn[gpu]" in missing.stderr.replace("\n", ""), missing.stderr


def test_gpu_hint_names_the_extra(tmp_path):
    frame = tmp_path / "f.tif"
    tifffile.imwrite(frame, np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    refused = run("classify", str(frame), "--device", "gpu")
    assert refused.returncode == 2, refused.stderr
    assert "pip install refocusd[gpu]" in " ".join(refused.stderr.split()), refused.stderr
    assert "Traceback" not in refused.stderr


def test_console_styles_only_its_own_tags():
    from refocusd.daemon.cli.common import MessageConsole

    console = MessageConsole(record=True, width=200, force_terminal=False)
    console.print("[bold red]error:[/] pip install refocusd[gpu] in [driver.micromanager] [/tmp/a]")
    assert console.export_text().strip() == "error: pip install refocusd[gpu] in [driver.micromanager] [/tmp/a]"
