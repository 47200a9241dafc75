"""Read the entries appended to a growing ``NDTiff.index`` since the last look.

An entry is: axes-JSON length (uint32), axes JSON, file-name length (uint32), file name,
eight uint32 (pixel offset, width, height, pixel type, compression, metadata offset,
metadata length, metadata compression). A zero axes length marks a finished dataset.
Only complete entries are consumed; a half-written one is read again next time.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ndstorage.ndtiff_index import NDTiffIndexEntry

INDEX_FILE = "NDTiff.index"
_U32 = struct.Struct("<I")
_FIELDS = struct.Struct("<8I")


@dataclass(frozen=True, slots=True)
class IndexRecord:
    axes: dict[str, Any]
    entry: NDTiffIndexEntry


class IndexTail:
    def __init__(self, dataset: Path) -> None:
        self.path = dataset / INDEX_FILE
        self._offset = 0
        self.finished = False

    def read_new(self) -> list[IndexRecord]:
        """Complete entries appended since the last call (empty while the file is absent)."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        records, used = _parse(data)
        self._offset += used
        if used < len(data) and len(data) - used >= 4 and _U32.unpack_from(data, used)[0] == 0:
            self.finished = True
        return records


def _parse(data: bytes) -> tuple[list[IndexRecord], int]:
    records, pos = [], 0
    while True:
        if len(data) - pos < 4:
            return records, pos
        (axes_len,) = _U32.unpack_from(data, pos)
        if axes_len == 0:
            return records, pos  # the finished marker: the caller sees it
        p = pos + 4 + axes_len
        if len(data) < p + 4:
            return records, pos
        (name_len,) = _U32.unpack_from(data, p)
        end = p + 4 + name_len + _FIELDS.size
        if len(data) < end:
            return records, pos
        axes = json.loads(data[pos + 4:pos + 4 + axes_len].decode("utf-8"))
        filename = data[p + 4:p + 4 + name_len].decode("utf-8")
        pix, width, height, ptype, _, md_off, md_len, _ = _FIELDS.unpack_from(data, p + 4 + name_len)
        key = frozenset(axes.items())
        entry = NDTiffIndexEntry(key, ptype, pix, width, height, md_off, md_len, filename)
        records.append(IndexRecord(axes=axes, entry=entry))
        pos = end
