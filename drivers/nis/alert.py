"""Tell the operator about a defocused frame NIS-Elements took: refocusd cannot move its stage.

Two optional channels, both carrying the frame's coordinates: a command run without a
shell (``{path}``, ``{relative_path}``, ``{page}``, ``{t}``, ``{xy}``, ``{z}``, ``{c}``,
``{stage_x_um}``, ``{stage_y_um}``, ``{stage_z_um}`` are filled in), and/or one JSON request
file per frame in a folder (written to a temporary name, then renamed: a reader never sees
half a request). An alert that fails is logged and never stops the daemon.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import structlog

from refocusd.config.files import atomic_write
from refocusd.drivers.base import Frame

log = structlog.get_logger(__name__)


def alert_fields(frame: Frame) -> dict[str, Any]:
    """The frame's place, as the operator would look for it in NIS-Elements."""
    names = frame.metadata.get("name_indices", {})
    stage = frame.metadata.get("stage_um") or [None, None, None]
    return {
        "path": frame.source.uri,
        "relative_path": frame.metadata.get("relative_path", ""),
        "page": frame.source.page,
        "t": names.get("t"),
        "xy": names.get("xy"),
        "z": names.get("z"),
        "c": names.get("c"),
        "stage_x_um": stage[0],
        "stage_y_um": stage[1],
        "stage_z_um": stage[2],
        "coords": frame.coords.as_dict(),
        "sha256": frame.metadata.get("sha256"),
    }


class OperatorAlert:
    def __init__(self, command: list[str] | None, request_dir: Path | None) -> None:
        self._command = command
        self._request_dir = request_dir
        self._running: list[subprocess.Popen] = []

    @property
    def enabled(self) -> bool:
        return bool(self._command) or self._request_dir is not None

    def defocused(self, frame: Frame, *, label: str | None, outcome: str) -> None:
        fields = alert_fields(frame) | {"label": label, "outcome": outcome, "reacquire": "unavailable"}
        if self._command:
            self._run(fields)
        if self._request_dir is not None:
            self._write_request(fields)
        self.reap()

    def _run(self, fields: dict[str, Any]) -> None:
        values = {k: "" if v is None else v for k, v in fields.items() if not isinstance(v, dict)}
        try:
            argv = [part.format(**values) for part in self._command or []]
        except (KeyError, IndexError, ValueError) as exc:
            log.error("alert.failed", channel="command", error=f"bad placeholder in alert_command: {exc}")
            return
        try:
            # Not waited for: a slow alert script must not hold up the frames behind it.
            self._running.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL))  # noqa: S603 - no shell
        except OSError as exc:
            log.error("alert.failed", channel="command", argv=argv, error=str(exc))
            return
        log.info("alert.sent", channel="command", argv=argv)

    def _write_request(self, fields: dict[str, Any]) -> None:
        assert self._request_dir is not None
        name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}_{(fields.get('sha256') or 'frame')[:12]}"
        name += f"_p{fields['page']}" if fields["page"] is not None else ""
        final = self._request_dir / f"{name}.json"
        try:
            atomic_write(final, json.dumps(fields, indent=2, default=str))
        except OSError as exc:
            log.error("alert.failed", channel="request_file", path=str(final), error=str(exc))
            return
        log.info("alert.sent", channel="request_file", path=str(final))

    def reap(self) -> None:
        """Collect finished alert commands (no zombies); log the ones that failed."""
        still = []
        for proc in self._running:
            code = proc.poll()
            if code is None:
                still.append(proc)
            elif code != 0:
                log.warning("alert.command_failed", argv=proc.args, returncode=code)
        self._running = still
