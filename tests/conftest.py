"""Suite-wide: a run must end when its tests have.

A thread left behind by a test (a library's non-daemon worker) would keep pytest's process
alive after the summary, and CI would wait on it until its time limit with nothing to say.
So after the summary the suite waits a little for such threads, then names them with
their stacks and ends the process with a failure.
"""

from __future__ import annotations

import os
import sys
import time

from exit_blockers import describe, exit_blockers

GRACE_S = 30.0


def pytest_unconfigure(config) -> None:  # noqa: ARG001 - pytest's hook signature
    deadline = time.monotonic() + GRACE_S
    while (left := exit_blockers()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        sys.stderr.write(f"\n{len(left)} thread(s) left running after the tests; they would block the exit:\n"
                         f"{describe(left)}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        os._exit(3)
