"""The bad-input corpus (bad_inputs.py): each kind gives a clear error, never a traceback,
and the good inputs next to it are still processed."""

from __future__ import annotations

import json
import subprocess

import pytest
import tifffile
from bad_inputs import CONFIG_CASES, GOOD, write_config, write_images
from daemon_process import REFOCUSD

# The reason each image kind must give (a fragment of the message).
EXPECTED_REASON = {
    "1-D image": "implausible frame size",
    "tiny 4x4 image": "implausible frame size",
    "float image with NaN": "NaN",
    "float image with Inf": "NaN or infinite",
    "complex pixels": "unsupported pixel type",
    "5-channel image": "shape",
    "absurd declared size": "declares 1000000x1000000 pixels",
    "blank frame": "no signal",
    "saturated frame": "no signal",
    "constant colour frame": "no signal",
    "constant float frame": "no signal",
}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*REFOCUSD, *args], capture_output=True, text=True, timeout=300)


def test_each_bad_image_is_reported_and_the_good_ones_are_classified(tmp_path):
    bad = write_images(tmp_path / "in")
    good = tmp_path / "in" / "good frame é.tif"  # spaces and non-ASCII are fine
    tifffile.imwrite(good, GOOD)
    done = cli("classify", *map(str, bad.values()), str(good), "--json")
    assert done.returncode == 1, done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    rows = {json.loads(line)["path"]: json.loads(line) for line in done.stdout.splitlines()}
    assert set(rows) == {str(p) for p in [*bad.values(), good]}, "one answer per input"
    assert rows[str(good)]["label"] in ("focused", "defocused")
    for kind, path in bad.items():
        row = rows[str(path)]
        assert "error" in row and row["error"].strip(), f"{kind}: {row}"
        assert kind not in EXPECTED_REASON or EXPECTED_REASON[kind] in row["error"], f"{kind}: {row['error']}"


@pytest.mark.parametrize("kind", sorted(CONFIG_CASES))
def test_each_bad_configuration_is_a_clear_usage_error(tmp_path, kind):
    config = write_config(tmp_path, kind)
    done = cli("config", "check", str(config))
    assert done.returncode == 2, (kind, done.stdout, done.stderr)
    assert CONFIG_CASES[kind][1] in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("make", ["missing", "folder"])
def test_a_configuration_path_that_is_not_a_file(tmp_path, make):
    path = tmp_path / "refocusd.toml"
    if make == "folder":
        path.mkdir()
    done = cli("config", "check", str(path))
    assert done.returncode == 2 and str(path) in done.stderr and "Traceback" not in done.stderr

