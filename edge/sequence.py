"""The agent's own per-device sequence number (for HostHealth), kept across restarts.

Serial devices number their own events; the agent numbers what it produces
itself. The counter is reserved in blocks: the file holds the first number
not yet handed out by any run, written (fsync + rename) before a block is
used, so a crash skips at most the rest of a block (a harmless gap) and never
reuses a number (which would overwrite an InfluxDB point).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from edge.errors import EdgeError

BLOCK: Final = 100


class SequenceFile:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        try:
            self._next = int(self._path.read_text().strip())
        except FileNotFoundError:
            self._next = 0
        except (OSError, ValueError) as exc:
            raise EdgeError(f"sequence file {self._path} is unreadable or corrupt: {exc}") from None
        self._reserved = self._next

    def next(self) -> int:
        if self._next >= self._reserved:
            self._reserved = self._next + BLOCK
            self._persist(self._reserved)
        value = self._next
        self._next += 1
        return value

    def _persist(self, value: int) -> None:
        temporary = self._path.with_suffix(".tmp")
        with open(temporary, "w", encoding="ascii") as handle:
            handle.write(f"{value}\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
