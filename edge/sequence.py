"""A durable sequence counter for one (device, stream), kept across restarts.

Sequence numbers count per (device, stream) (docs/wire.md). Serial devices
number their own streams; the agent numbers the one stream it produces
itself, ``health`` (its HostHealth samples, under its ``[agent] device`` id),
with one `SequenceFile`. Nothing else shares that counter, so when the agent
and its terminal have the same id, neither breaks the other's sequences.

The counter is reserved in blocks: the file holds the first number
not yet handed out by any run, written (fsync, rename, fsync of the
directory) before a block is used, so a crash or a power cut skips at most
the rest of a block (a harmless gap) and never reuses a number (which would
overwrite an InfluxDB point).

A reservation that cannot be written (full disk, I/O error) raises
`SequenceError` and hands out nothing: no number is ever used before the
file says it is taken. The caller skips what it wanted to number; the next
`next` tries the reservation again, and `error` says why the last one failed
until one succeeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from edge.errors import EdgeError, SequenceError
from runtime.statefile import write_atomically

BLOCK: Final = 100


class SequenceFile:
    """The counter of one stream, in the file at ``path`` (one file per stream)."""

    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        try:
            self._next = int(self._path.read_text().strip())
        except FileNotFoundError:
            self._next = 0
        except (OSError, ValueError) as exc:
            raise EdgeError(f"sequence file {self._path} is unreadable or corrupt: {exc}") from None
        self._reserved = self._next
        self.error: str | None = None  # why the last reservation failed; None once one works

    def next(self) -> int:
        """The next number; raises `SequenceError` when a new block cannot be reserved."""
        if self._next >= self._reserved:
            self._persist(self._next + BLOCK)
            self._reserved = self._next + BLOCK  # only once the file says so
        value = self._next
        self._next += 1
        return value

    def _persist(self, value: int) -> None:
        try:
            write_atomically(self._path, f"{value}\n".encode("ascii"))
        except OSError as exc:
            self.error = f"cannot reserve numbers in {self._path}: {exc}"
            raise SequenceError(self.error) from exc
        self.error = None
