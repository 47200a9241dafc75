"""Folders that really refuse writes, for root and non-root test runs alike.

As root, permission bits do not stop writes, so a folder is made read-only by mounting a
tmpfs on it and remounting it ``ro`` (EROFS). Without root, ``chmod 0o555`` does it (EACCES).
Where neither works (root in a container that may not mount) the test is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest


class Switch:
    """A folder that can be made read-only and writable again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.mounted = False
        if os.geteuid() == 0:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                pytest.skip(f"running as root and cannot mount a tmpfs to make a folder read-only: {done.stderr}")
            self.mounted = True

    def read_only(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,ro", str(self.folder)], check=True)
        else:
            self.folder.chmod(0o555)

    def writable(self) -> None:
        if self.mounted:
            subprocess.run(["mount", "-o", "remount,rw", str(self.folder)], check=True)
        else:
            self.folder.chmod(0o755)

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.folder)], check=False)
        else:
            self.folder.chmod(0o755)


@pytest.fixture
def read_only_switch():
    made: list[Switch] = []

    def make(folder: Path) -> Switch:
        made.append(Switch(folder))
        return made[-1]

    yield make
    for switch in reversed(made):
        switch.close()
