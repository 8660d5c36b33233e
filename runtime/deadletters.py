"""A bounded on-disk store of rejected input, kept for inspection.

Each rejected payload is one JSON line: when, from where, why, and the bytes
(as text when they are UTF-8, else base64). Lines go to numbered segment
files in one directory; when a new segment would make more than ``segments``
of them, the oldest is deleted and the records it held are counted as
evicted. Writes are flushed but not fsynced: dead letters are for diagnosis,
and losing the last few on a power cut loses no good data (`read_all` skips
a line cut short by one).

The byte limit is exact: ``segments`` files of at most ``max_bytes //
segments`` bytes each. A record that would not fit in one segment keeps only
the head of its payload (``truncated``; ``size`` is still the whole size).

Keeping never raises for the disk: a write that fails (full disk, I/O error)
is counted (``write_errors``, and the record in ``lost``), logged once per run
of failures, and ``last_error`` says why until a later `keep` succeeds (each
one tries again, on a fresh file handle). A payload, reason or source that
carries a card number is never written: it is counted in ``refused_pan``
(wire.pci), whatever the caller checked before.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from pathlib import Path
from typing import IO, Final

import msgspec

from runtime.logs import kv
from wire import pci

log = logging.getLogger(__name__)

SEGMENT_SUFFIX: Final = ".jsonl"
MIN_SEGMENT_BYTES: Final = 8 << 10  # always room for a record's reason and source
MAX_REASON_CHARS: Final = 1000
MAX_SOURCE_CHARS: Final = 200  # with the reason, even all-escaped: < 8 KiB of JSON


class DeadLetter(msgspec.Struct, kw_only=True):
    ts_unix: float
    source: str
    reason: str
    payload: str
    payload_encoding: str  # "utf-8" or "base64"
    size: int  # of the whole payload, also when only its head is kept
    truncated: bool = False


class DeadLetters:
    def __init__(self, directory: str | Path, *, max_bytes: int = 16 << 20, segments: int = 8):
        if segments < 2:
            raise ValueError("a dead-letter store needs at least 2 segments")
        if max_bytes // segments < MIN_SEGMENT_BYTES:
            raise ValueError(
                f"a dead-letter store needs max_bytes >= segments * {MIN_SEGMENT_BYTES}"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._segment_bytes = max_bytes // segments
        self._segments = segments
        self._lock = threading.Lock()
        self.kept = 0
        self.evicted = 0
        self.write_errors = 0
        self.lost = 0  # records not kept because of a write error
        self.refused_pan = 0
        self.last_error: str | None = None  # why the last keep failed; None once one worked
        existing = self._segment_paths()
        self._index = int(existing[-1].stem) if existing else 0
        self._size = self._path(self._index).stat().st_size if existing else 0
        self._file: IO[bytes] | None = None  # opened by the first keep: none needed to start
        self._evict()  # a store reopened with fewer segments

    def keep(self, payload: bytes, *, reason: str, source: str) -> bool:
        """Store one rejected payload; False if it was not kept (a write error, a card
        number). Never raises for the disk (see the module doc)."""
        reason, source = reason[:MAX_REASON_CHARS], source[:MAX_SOURCE_CHARS]
        if _carries_pan(payload, reason, source):
            with self._lock:
                self.refused_pan += 1
            log.warning("deadletter_refused_pan", extra=kv(source_len=len(source)))
            return False
        line = _record_line(payload, reason, source, self._segment_bytes)
        with self._lock:
            try:
                self._write(line)
            except OSError as exc:
                self.write_errors += 1
                self.lost += 1
                if self.last_error is None:
                    log.error(
                        "deadletters_write_failed",
                        extra=kv(directory=str(self.directory), error=str(exc)),
                    )
                self.last_error = str(exc)
                return False
            self.kept += 1
            if self.last_error is not None:
                log.info("deadletters_writable_again", extra=kv(lost=self.lost))
                self.last_error = None
        return True

    def read_all(self) -> list[DeadLetter]:
        """Every whole record still on disk, oldest first."""
        decoder = msgspec.json.Decoder(DeadLetter)
        records = []
        with self._lock:
            for path in self._segment_paths():
                for line in path.read_bytes().splitlines():
                    try:
                        records.append(decoder.decode(line))
                    except msgspec.DecodeError:  # cut short by a power loss or a full disk
                        continue
        return records

    def close(self) -> None:
        with self._lock:
            self._close_file()

    def _write(self, line: bytes) -> None:
        """Append one line whole, or leave the segment as it was and raise OSError (the
        next write then opens the file afresh)."""
        if self._size + len(line) > self._segment_bytes and self._size > 0:
            self._close_file()
            self._index += 1
            self._size = 0
            self._evict()
        if self._file is None:
            self._file = open(self._path(self._index), "ab", buffering=0)  # noqa: SIM115
        try:
            written = 0
            while written < len(line):
                written += self._file.write(line[written:]) or 0
        except OSError:
            try:
                self._file.truncate(self._size)  # no half record left behind
            finally:  # if even that failed, read_all skips the half record
                self._close_file()
            raise
        self._size += len(line)

    def _close_file(self) -> None:
        if self._file is not None:
            file, self._file = self._file, None
            file.close()

    def _evict(self) -> None:
        """Delete the oldest segments so that, with the current one, ``segments`` remain."""
        current = self._path(self._index)
        older = [path for path in self._segment_paths() if path != current]
        for old in older[: max(0, len(older) - (self._segments - 1))]:
            evicted = old.read_bytes().count(b"\n")
            old.unlink()
            self.evicted += evicted
            log.warning("deadletters_evicted", extra=kv(segment=old.name, records=evicted))

    def _segment_paths(self) -> list[Path]:
        return sorted(self.directory.glob(f"*{SEGMENT_SUFFIX}"), key=lambda p: int(p.stem))

    def _path(self, index: int) -> Path:
        return self.directory / f"{index:08d}{SEGMENT_SUFFIX}"


def _carries_pan(payload: bytes, *texts: str) -> bool:
    return any(pci.payload_contains_pan(data) for data in (payload, *map(str.encode, texts)))


def _record_line(payload: bytes, reason: str, source: str, limit: int) -> bytes:
    """The record as one JSON line of at most ``limit`` bytes: the payload's head if the
    whole would not fit (the reason and source always do, see MIN_SEGMENT_BYTES)."""
    head = payload
    while True:
        try:
            text, encoding = head.decode("utf-8"), "utf-8"
        except UnicodeDecodeError as exc:
            if head is not payload and exc.start >= len(head) - 3:  # a character cut in two
                text, encoding = head[: exc.start].decode("utf-8"), "utf-8"
            else:
                text, encoding = base64.b64encode(head).decode("ascii"), "base64"
        record = DeadLetter(
            ts_unix=time.time(),
            source=source,
            reason=reason,
            payload=text,
            payload_encoding=encoding,
            size=len(payload),
            truncated=len(head) < len(payload),
        )
        line = msgspec.json.encode(record) + b"\n"
        if len(line) <= limit:
            return line
        # Escapes (up to 6 bytes a byte) make the fit a guess: shrink in proportion.
        head = head[: min(len(head) - 1, len(head) * limit // len(line))]
