"""Provenance records: content, hashing, JSON-safety, and no TensorFlow import."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tifffile

from refocusd.daemon.output.provenance import (
    PROVENANCE_SCHEMA,
    build_provenance,
    flatten,
    sha256_array,
    sha256_file,
)
from refocusd.models import Verdict


def make(tmp_path: Path, **overrides):
    source = tmp_path / "plate1" / "A01_t003.tif"
    source.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(source, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    kwargs = dict(
        reason="missed_timepoint",
        source_path=source,
        source_sha256=sha256_file(source),
        coords={"plate": "P1", "well": "A01", "position": np.int64(2), "t": 3},
        acquired_at=1_767_225_600.25,
        verdict=Verdict(
            p_focused=0.0731, label="defocused", model_id="sdcnn@1+abc", latency_s=0.005
        ),
        reconstructor={"name": "resunet", "version": "1", "weights_sha256": "f" * 64,
                       "architecture": {"filters": [16, 32, 64]}},
        parameters={"tile": 388, "overlap": np.float32(0.25)},
        run_id="run-7",
        device="CPU",
        created_at=1_767_225_700.0,
    )
    kwargs.update(overrides)
    return source, build_provenance(**kwargs)


def test_record_holds_everything_and_is_json(tmp_path: Path) -> None:
    source, prov = make(tmp_path)
    assert json.loads(json.dumps(prov, allow_nan=False)) == prov
    assert prov["schema"] == PROVENANCE_SCHEMA and prov["reason"] == "missed_timepoint"
    assert prov["source"]["path"] == str(source)
    assert prov["source"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert prov["source"]["coordinates"]["position"] == 2
    assert prov["source"]["acquired_at"] == "2026-01-01T00:00:00.250000Z"
    assert prov["classifier"] == {"p_focused": 0.0731, "label": "defocused",
                                  "model": "sdcnn@1+abc", "latency_ms": 5.0,
                                  "defocus_um": None, "defocus_sigma_um": None,
                                  "pixel_size_um": None}
    assert prov["reconstructor"]["weights_sha256"] == "f" * 64
    assert prov["parameters"] == {"tile": 388, "overlap": 0.25}
    assert prov["software"]["numpy"] == np.__version__
    assert prov["software"]["tifffile"] == tifffile.__version__
    assert prov["software"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert prov["host"]["hostname"] and prov["device"] == "CPU" and prov["run_id"] == "run-7"
    assert prov["created_at"] == "2026-01-01T00:01:40.000000Z"


def test_missing_verdict_and_time_are_explicit_nulls(tmp_path: Path) -> None:
    _, prov = make(tmp_path, verdict=None, acquired_at=None, source_path="sim://P1/A01/t3")
    assert prov["classifier"] is None and prov["source"]["acquired_at"] is None
    assert prov["source"]["path"] == "sim://P1/A01/t3"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"source_sha256": "abc"}, "64 lowercase hex"),
        ({"reason": ""}, "needs a reason"),
        ({"parameters": {"sigma": float("nan")}}, "provenance.parameters.sigma"),
        ({"parameters": {"fn": print}}, "not JSON-serialisable"),
    ],
)
def test_bad_input_is_named(tmp_path: Path, override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(tmp_path, **override)


def test_sha256_file_streams_across_chunks(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, 3 * (1 << 20) + 17, dtype=np.uint8).tobytes()
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_sha256_array_includes_shape_and_dtype() -> None:
    a = np.arange(16, dtype=np.uint8)
    assert sha256_array(a) == sha256_array(a.copy())
    assert sha256_array(a) != sha256_array(a.reshape(4, 4))
    assert sha256_array(a) != sha256_array(a.view(np.int8))
    assert sha256_array(a.reshape(4, 4).T) == sha256_array(np.ascontiguousarray(a.reshape(4, 4).T))


def test_flatten_nested_lists_and_nulls() -> None:
    flat = flatten({"a": {"b": [1, {"c": None}]}, "d": True, "e": 0.5})
    assert flat == [("a.b.0", "1"), ("a.b.1.c", ""), ("d", "true"), ("e", "0.5")]


def test_tensorflow_is_not_imported_for_provenance(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from refocusd.daemon.output.provenance import build_provenance, software_versions
        build_provenance(reason="manual", source_path="x", source_sha256="0" * 64, coords={},
                         acquired_at=None, verdict=None, reconstructor={}, parameters={},
                         run_id="r", device="CPU")
        print("tensorflow" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "False"
