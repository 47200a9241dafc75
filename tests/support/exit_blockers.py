"""Threads that would keep a Python process from exiting.

At exit Python joins every non-daemon thread. Idle ``concurrent.futures`` workers end
there (the executor's exit hook wakes them); any other non-daemon thread, or a busy
worker, is waited for, however long that takes.
"""

from __future__ import annotations

import sys
import threading
import traceback


def exit_blockers() -> list[threading.Thread]:
    frames = sys._current_frames()
    return [t for t in threading.enumerate()
            if not t.daemon and t is not threading.main_thread()
            and t.ident in frames and frames[t.ident].f_code.co_name != "_worker"]


def describe(threads: list[threading.Thread]) -> str:
    frames = sys._current_frames()
    return "\n".join(f"thread {t.name!r}:\n" + "".join(traceback.format_stack(frames[t.ident]))
                     for t in threads if t.ident in frames)
