"""NIS export-folder benchmark: TIFFs dropped at a steady rate, time from drop to verdict.

A writer thread drops 2048×2048 16-bit TIFFs into a watched folder at ``--rate`` files/s
for ``--seconds`` (each written to a temporary name outside the patterns and renamed in,
the way an exporter finishes a file; ``--direct`` writes in place instead). The real
service runs in-process with the shipped classifier on CPU: native observer, settle time
``--settle``, ledger, JSON log. Reported: files/s sustained (verdicts over the drop
window), drop-to-verdict latency percentiles (drop = the file is complete on disk,
verdict = the runner's outcome callback), backlog at the end of the drop window.

    python bench/bench_nis.py [--rate 30] [--seconds 30] [--settle 0.5] [--driver-only]

``--driver-only`` runs the watcher without the service (no classifier, no ledger rows):
its own capacity, to tell it apart from the classifier's.

The frames are simulated focused fields (a few renders, copied with one pixel changed so
each file has its own content hash), so the run measures the hot path (settle → hash →
read → classify → ledger) rather than reconstructions. Accepted files are deleted by the
benchmark (not by refocusd) once verdicted, to bound disk use.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def focused_fields(size: int, n: int):
    from refocusd.config.settings import SimulatedMicroscopeSettings
    from refocusd.drivers import SimulatedClock
    from refocusd.drivers.simulated.camera import SimulatedCamera

    settings = SimulatedMicroscopeSettings(frame_shape=(size, size), camera_pixel_um=3.7 * 512 / size)
    camera = SimulatedCamera(settings, clock=SimulatedClock())
    return [camera.snap((0, i, 0), 0.0, noise_key=(i,)) for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=30.0, help="files dropped per second")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the drop window")
    parser.add_argument("--settle", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--direct", action="store_true", help="write files in place (no rename)")
    parser.add_argument("--driver-only", action="store_true", help="the watcher alone, no classifier")
    args = parser.parse_args()

    import tifffile

    from refocusd.config import load_settings
    from refocusd.daemon.ops.logging import configure_logging
    from refocusd.daemon.service import Service

    work = Path(tempfile.mkdtemp(prefix="refocusd-nis-bench-"))
    export = work / "export"
    export.mkdir()
    settings = load_settings(
        None,
        overrides={
            "service": {"state_dir": str(work / "state"), "output_root": str(work / "out"), "experiment": "bench"},
            "driver": {"kind": "nis", "nis": {"watch_dir": str(export), "settle_s": args.settle,
                                              "heartbeat_s": 10.0, "rescan_interval_s": 30.0}},
            "logging": {"file": str(work / "refocusd.jsonl")},
            "models": {"device": "cpu"},
        },
    )
    configure_logging(level="info", fmt="json", file=settings.logging.file, console_level="error")
    fields = focused_fields(args.size, 4)

    dropped: dict[str, float] = {}
    verdicts: dict[str, float] = {}
    labels: dict[str, str | None] = {}
    stop = threading.Event()

    def on_outcome(outcome) -> None:
        uri = outcome.source.split("@")[0].split("#")[0]
        verdicts[uri] = time.perf_counter()
        labels[uri] = outcome.label
        if outcome.outcome == "accepted":
            Path(uri).unlink(missing_ok=True)

    if args.driver_only:
        # The watcher alone (settle → hash → read), no classifier: its own capacity.
        from refocusd.drivers.nis import NisExportFolder, open_fingerprints

        from refocusd.daemon.state.ledger import Ledger

        Ledger.open(work / "state" / "l.sqlite").close()  # its migrations create the fingerprints table
        driver = NisExportFolder(settings.driver.nis, fingerprints=open_fingerprints(work / "state" / "l.sqlite"),
                                 stop=stop)

        def consume() -> None:
            for frame in driver.frames():
                on_outcome(SimpleNamespace(source=frame.source.key, label="(none)", outcome="accepted"))
            driver.close()

        runner = threading.Thread(target=consume, daemon=True)
        service = None
    else:
        service = Service(settings, stop=stop, on_outcome=on_outcome)
        service.start()
        runner = threading.Thread(target=service.run, daemon=True)
    runner.start()

    total = int(args.rate * args.seconds)
    period = 1.0 / args.rate

    def writer() -> None:
        began = time.perf_counter()
        for i in range(total):
            pixels = fields[i % len(fields)].copy()
            pixels[0, 0] = i % 65536
            name = f"bench_t{i + 1:05d}xy{i % 4 + 1:02d}c1.tif"
            final = export / name
            target = final if args.direct else export / f".{name}.part"
            tifffile.imwrite(target, pixels, photometric="minisblack", metadata=None)
            if not args.direct:
                os.replace(target, final)
            dropped[str(final)] = time.perf_counter()
            delay = began + (i + 1) * period - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

    t0 = time.perf_counter()
    write = threading.Thread(target=writer)
    write.start()
    write.join()
    window_end = time.perf_counter()
    backlog_at_end = total - len(verdicts)
    deadline = time.time() + 60
    while len(verdicts) < total and time.time() < deadline:
        time.sleep(0.05)
    drain_s = time.perf_counter() - window_end
    stop.set()
    runner.join(30)
    if service is not None:
        service.close()

    lat = sorted(verdicts[p] - dropped[p] for p in verdicts if p in dropped)
    pct = lambda q: lat[min(len(lat) - 1, int(q * len(lat)))]  # noqa: E731
    first, last = min(verdicts.values()), max(verdicts.values())
    result = {
        "files": total,
        "verdicts": len(verdicts),
        "frame": f"{args.size}x{args.size} uint16",
        "drop_rate_files_per_s": round(total / (window_end - t0), 1),
        "files_per_s_sustained": round((len(verdicts) - 1) / (last - first), 1) if len(verdicts) > 1 else None,
        "backlog_at_end_of_drops": backlog_at_end,
        "drain_after_drops_s": round(drain_s, 2),
        "settle_s": args.settle,
        "latency_s_p50": round(pct(0.50), 3),
        "latency_s_p95": round(pct(0.95), 3),
        "latency_s_max": round(lat[-1], 3),
        "target_p95_s": args.settle + 0.5,
        "labels": {str(k): sum(1 for v in labels.values() if v == k) for k in set(labels.values())},
        "cpu_count": os.cpu_count(),
        "mode": ("in place" if args.direct else "rename in") + (", driver only" if args.driver_only else ""),
    }
    print(json.dumps(result, indent=2))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
