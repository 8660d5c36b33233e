"""A bounded on-disk store of rejected input, kept for inspection.

Each rejected payload is one JSON line: when, from where, why, and the bytes
(as text when they are UTF-8, else base64). Lines go to numbered segment
files in one directory; when the directory would exceed ``max_bytes`` the
oldest segment is deleted and the records it held are counted as evicted.
Writes are flushed but not fsynced: dead letters are for diagnosis, and
losing the last few on a power cut loses no good data.

Never pass a payload that carries card data: callers count and log those
without keeping them (wire.pci).
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path
from typing import IO, Final

import msgspec

from tillpulse.logs import kv

log = logging.getLogger(__name__)

SEGMENT_SUFFIX: Final = ".jsonl"


class DeadLetter(msgspec.Struct, kw_only=True):
    ts_unix: float
    source: str
    reason: str
    payload: str
    payload_encoding: str  # "utf-8" or "base64"
    size: int


class DeadLetters:
    def __init__(self, directory: str | Path, *, max_bytes: int = 16 << 20, segments: int = 8):
        if segments < 2:
            raise ValueError("a dead-letter store needs at least 2 segments")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = max(4096, max_bytes // segments)
        self._segments = segments
        self._lock = threading.Lock()
        self.kept = 0
        self.evicted = 0
        existing = self._segment_paths()
        self._index = int(existing[-1].stem) if existing else 0
        self._file: IO[bytes] = open(self._path(self._index), "ab")  # noqa: SIM115 - kept open

    def keep(self, payload: bytes, *, reason: str, source: str) -> None:
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        record = DeadLetter(
            ts_unix=time.time(),
            source=source,
            reason=reason[:1000],
            payload=text,
            payload_encoding=encoding,
            size=len(payload),
        )
        line = msgspec.json.encode(record) + b"\n"
        with self._lock:
            if self._file.tell() + len(line) > self._segment_bytes and self._file.tell() > 0:
                self._rotate()
            self._file.write(line)
            self._file.flush()
            self.kept += 1

    def read_all(self) -> list[DeadLetter]:
        """Every record still on disk, oldest first."""
        with self._lock:
            self._file.flush()
            decoder = msgspec.json.Decoder(DeadLetter)
            return [
                decoder.decode(line)
                for path in self._segment_paths()
                for line in path.read_bytes().splitlines()
                if line
            ]

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _rotate(self) -> None:
        self._file.close()
        self._index += 1
        self._file = open(self._path(self._index), "ab")  # noqa: SIM115 - kept open
        paths = self._segment_paths()
        for old in paths[: max(0, len(paths) - self._segments)]:
            evicted = old.read_bytes().count(b"\n")
            old.unlink()
            self.evicted += evicted
            log.warning("deadletters_evicted", extra=kv(segment=old.name, records=evicted))

    def _segment_paths(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"), key=lambda p: int(p.stem))

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:08d}{SEGMENT_SUFFIX}"
