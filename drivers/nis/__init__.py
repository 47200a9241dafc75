"""The NIS-Elements export-folder driver (``driver.kind = "nis"``).

Nikon NIS-Elements keeps the stage; refocusd watches the folder it exports into
(:mod:`.watcher`), takes each file once its size and mtime have settled and it parses
(:mod:`.settle`, :mod:`.readers`), reads the loop indices from the file name
(:mod:`.names`, :mod:`.frames`), hashes and reads ahead of the runner (:mod:`.loading`),
remembers what it took in the ledger (:mod:`.fingerprints`) and yields the frames
(:mod:`.driver`). Defocused frames are reconstructed (no stage control);
:mod:`.alert` can tell the operator.
"""

from pathlib import Path

from refocusd.drivers.nis.driver import NisExportFolder
from refocusd.drivers.nis.fingerprints import FileFingerprints


def open_fingerprints(ledger_path: Path) -> FileFingerprints:
    """The fingerprints table of an (already opened, hence migrated) ledger."""
    """The driver's table in the ledger file at ``ledger_path``."""
    return FileFingerprints(ledger_path)


__all__ = ["FileFingerprints", "NisExportFolder", "open_fingerprints"]
