"""The gateway's durable spool: an append-only segment log of line-protocol lines.

The MQTT side `Spool.append`s the lines of many messages at once (group
commit) and acknowledges those messages to the broker only after ``append``
returned. The forwarder `Spool.read`s batches from the oldest unforwarded line
and `Spool.commit`s each batch once InfluxDB took it (or it was dead-lettered).
One process owns a spool directory (an exclusive ``flock`` on ``lock``).

On disk
    Numbered segment files ``<id>.seg`` (ids consecutive, oldest first) and a
    ``cursor`` file. An append is one record::

        u32 payload length | u32 CRC-32 | u32 line count | i64 append time (unix ns)
        payload: per line, u32 length + the line's bytes

    The CRC covers everything after itself (count, time, payload), so an
    append is all or nothing: a record cut short by SIGKILL or power loss
    fails its length or CRC check. On open, every segment is read and checked
    (about 2 s per GB here): a bad tail of the newest segment is
    truncated (logged, counted as ``torn_tail_bytes``); a bad record anywhere
    else raises `SpoolCorruptError` rather than guess. Lines are never split
    on newlines (a string field may hold one).

Durability (fsync policy)
    ``FsyncPolicy()`` (mode ``always``, the default): every append is written
    and fsync'd before it returns, one fsync per group commit, so an
    acknowledged message survives power loss.
    ``FsyncPolicy(FsyncMode.INTERVAL, interval_s=1.0)``: an append fsyncs only
    when the last fsync is ``interval_s`` or more ago. Every returned append
    survives a crash of the process (it is in the page cache), but power loss
    may lose the appends since the last fsync: those made within
    ``interval_s`` before it, and any made since if no append came after
    them (the kernel writes dirty pages back within about 30 s). Faster, and
    the MQTT messages behind the lost appends were already acknowledged: use
    it only where losing them on power loss is acceptable.
    In both modes a segment is fsync'd when it is closed (rotation, `close`)
    and the directory is fsync'd when a segment is created or deleted.
    The cursor is written atomically (write + rename) but not fsync'd: after
    power loss it may point to an older line (or be unreadable: then reading
    starts at the oldest segment), and lines are sent twice, which InfluxDB
    absorbs (a point's identity is in its line, see wire.points). A cursor
    past the end of the data (interval mode lost the tail) is moved back to
    the end, logged as ``spool_cursor_moved``.

Bound and back-pressure
    ``max_bytes`` bounds the segment files on disk, including the forwarded
    head of the oldest segment, which is deleted once the whole segment is
    forwarded (so up to ``segment_bytes`` of the bound can be already-forwarded
    data). An append that would pass it, or that meets a full disk, stores
    nothing and raises `SpoolFullError`; the event is counted and logged (once
    per run of full events). The caller must then stop acknowledging MQTT
    messages (back-pressure: the broker keeps them in the persistent session)
    and retry the append later. Payments are never dropped here.

Delivery
    `read` hands out lines in append order, continuing after the last batch it
    handed out; `commit` persists "everything up to the end of this batch is
    forwarded" (cumulative). After a restart or a `rewind`, reading resumes at
    the committed cursor: lines read but not committed are handed out again
    (at least once).
"""

from __future__ import annotations

import contextlib
import enum
import errno
import fcntl
import itertools
import logging
import os
import struct
import threading
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from gateway.errors import SpoolCorruptError, SpoolError, SpoolFullError, SpoolLockedError
from tillpulse.logs import kv

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("<IIIq")  # payload length, crc32, line count, append ns
_LINE_LEN: Final = struct.Struct("<I")
_CURSOR: Final = struct.Struct("<QQQ")  # segment, record offset, lines consumed; + crc32
_SEGMENT_SUFFIX: Final = ".seg"
_CURSOR_FILE: Final = "cursor"
_LOCK_FILE: Final = "lock"
_DISK_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class FsyncMode(enum.StrEnum):
    ALWAYS = "always"  # fsync every append before it returns (group commit)
    INTERVAL = "interval"  # fsync at most every interval_s (see the module docstring)


@dataclass(frozen=True, slots=True)
class FsyncPolicy:
    mode: FsyncMode = FsyncMode.ALWAYS
    interval_s: float = 1.0


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """A place in the log: a record, and how many of its lines come before it."""

    segment: int
    offset: int
    line: int


@dataclass(frozen=True, slots=True)
class Batch:
    """Lines handed out by `Spool.read`, oldest first; pass it back to `Spool.commit`."""

    lines: list[bytes]
    end: Position
    ordinal: tuple[int, int] = field(repr=False)  # (lines, bytes) read in this run, at end

    def __len__(self) -> int:
        return len(self.lines)


@dataclass(frozen=True, slots=True)
class SpoolStats:
    depth_lines: int  # appended, not yet committed
    depth_bytes: int  # their line bytes
    disk_bytes: int  # segment files on disk (what max_bytes bounds)
    segments: int
    oldest_age_s: float | None  # age of the oldest uncommitted line (by its append time)
    appends: int
    appended_lines: int
    fsyncs: int
    full_events: int
    torn_tail_bytes: int  # cut from the newest segment when the spool was opened


@dataclass(slots=True)
class _Record:
    lines: list[bytes]
    size: int  # header + payload bytes on disk
    append_ns: int


class Spool:
    """A durable, bounded FIFO of lines on disk; see the module docstring."""

    def __init__(
        self,
        directory: str | Path,
        *,
        max_bytes: int = 1 << 30,
        segment_bytes: int = 64 << 20,
        fsync: FsyncPolicy = FsyncPolicy(),
    ) -> None:
        if not 4096 <= segment_bytes <= max_bytes:
            raise ValueError("a spool needs 4096 <= segment_bytes <= max_bytes")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        self._lock = threading.Lock()
        self._data = threading.Condition(self._lock)  # appends notify waiting readers
        self._append_lock = threading.Lock()  # serialises appends (write + fsync)
        self._appends = self._appended_lines = self._fsyncs = self._full_events = 0
        self._full_streak = False
        self._last_fsync = time.monotonic()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_directory(self.directory)
        try:
            self._open_log()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- opening ---------------------------------------------------------------------

    def _open_log(self) -> None:
        ids = sorted(int(p.stem) for p in self.directory.glob(f"*{_SEGMENT_SUFFIX}"))
        cursor = self._load_cursor()
        for stale in [i for i in ids if i < cursor.segment]:  # forwarded before a crash
            self._path(stale).unlink()
            ids.remove(stale)
        if not ids:
            ids = [cursor.segment]
            self._create_segment(cursor.segment)
        if ids != list(range(ids[0], ids[-1] + 1)):
            raise SpoolCorruptError(
                f"{self.directory}: segments missing between {ids[0]} and {ids[-1]}"
            )
        if cursor.segment < ids[0]:
            cursor = Position(ids[0], 0, 0)
        self._segments: dict[int, int] = {}  # id -> valid size, oldest first
        self._torn_tail_bytes = 0
        lines = nbytes = 0
        for index, segment in enumerate(ids):
            size, cursor, seg_lines, seg_bytes = self._scan(
                segment, cursor, newest=index == len(ids) - 1
            )
            self._segments[segment] = size
            lines += seg_lines
            nbytes += seg_bytes
        self._active = ids[-1]
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND)
        self._committed = self._read_pos = cursor
        self._total = (lines, nbytes)  # ordinals: lines/bytes ever appended in this run
        self._committed_ord = self._read_ord = (0, 0)
        self._disk_bytes = sum(self._segments.values())
        self._reader: tuple[int, int] | None = None  # (segment, fd) of the read handle
        self._collect()
        log.info(
            "spool_opened",
            extra=kv(
                directory=str(self.directory),
                segments=len(ids),
                depth_lines=lines,
                depth_bytes=nbytes,
                cursor=f"{cursor.segment}:{cursor.offset}:{cursor.line}",
            ),
        )

    def _scan(
        self, segment: int, cursor: Position, *, newest: bool
    ) -> tuple[int, Position, int, int]:
        """Check every record of a segment: (valid size, cursor, unforwarded lines, bytes).

        A cursor that does not land on a record of this segment is moved to the
        nearest earlier place that does (lines are then sent again, never skipped).
        """
        path = self._path(segment)
        data = path.read_bytes()
        offset = lines = nbytes = 0
        cursor_seen = cursor.segment != segment
        while offset < len(data):
            record = _decode(data, offset)
            if record is None:
                if not newest:
                    raise SpoolCorruptError(f"{path}: bad record at byte {offset} of {len(data)}")
                self._truncate_tail(path, offset, len(data) - offset)
                break
            skip = 0
            if not cursor_seen and offset + record.size > cursor.offset:
                # the record at the cursor; or the one around it, replayed whole
                skip = min(cursor.line, len(record.lines)) if offset == cursor.offset else 0
                cursor = Position(segment, offset, skip)
                cursor_seen = True
            if cursor_seen:
                kept = record.lines[skip:]
                lines += len(kept)
                nbytes += sum(map(len, kept))
            offset += record.size
        if not cursor_seen:  # the cursor is at or past the end of the valid data
            if cursor.offset != offset:
                log.warning(
                    "spool_cursor_moved",
                    extra=kv(segment=segment, cursor_offset=cursor.offset, end=offset),
                )
            cursor = Position(segment, offset, 0)
        return offset, cursor, lines, nbytes

    def _truncate_tail(self, path: Path, offset: int, dropped: int) -> None:
        with open(path, "r+b") as f:
            f.truncate(offset)
            os.fsync(f.fileno())
        self._torn_tail_bytes += dropped
        log.warning(
            "spool_torn_tail_truncated", extra=kv(segment=path.name, offset=offset, bytes=dropped)
        )

    def _load_cursor(self) -> Position:
        path = self.directory / _CURSOR_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return Position(0, 0, 0)
        if len(raw) == _CURSOR.size + _LINE_LEN.size:
            body, (crc,) = raw[: _CURSOR.size], _LINE_LEN.unpack(raw[_CURSOR.size :])
            if zlib.crc32(body) == crc:
                return Position(*_CURSOR.unpack(body))
        log.warning("spool_cursor_unreadable", extra=kv(path=str(path), action="replay_all"))
        return Position(0, 0, 0)

    # -- appending -------------------------------------------------------------------

    def append(self, lines: Sequence[bytes]) -> None:
        """Store ``lines`` (encoded, validated line protocol) as one all-or-nothing record.

        Durable on return per the fsync policy. Raises `SpoolFullError` (nothing
        stored) when the bound or the disk is full.
        """
        if not lines:
            return
        record = _encode(lines)
        if len(record) > self.segment_bytes:
            raise ValueError(
                f"an append of {len(record)} bytes is larger than a segment "
                f"({self.segment_bytes}): append fewer lines at a time"
            )
        with self._append_lock:
            with self._lock:
                if self._segments[self._active] + len(record) > self.segment_bytes:
                    self._rotate()  # first: it deletes the old segment if it is forwarded
                self._check_room(len(record))
                fd, offset = self._fd, self._segments[self._active]
            self._write(fd, offset, record)
            with self._data:
                self._segments[self._active] += len(record)
                self._disk_bytes += len(record)
                self._total = (self._total[0] + len(lines), self._total[1] + sum(map(len, lines)))
                self._appends += 1
                self._appended_lines += len(lines)
                self._data.notify_all()
                if self._full_streak:
                    self._full_streak = False
                    log.info("spool_accepting_again", extra=kv(full_events=self._full_events))

    def _check_room(self, size: int) -> None:
        if self._disk_bytes + size <= self.max_bytes:
            return
        self._full_events += 1
        if not self._full_streak:
            self._full_streak = True
            log.warning(
                "spool_full",
                extra=kv(disk_bytes=self._disk_bytes, max_bytes=self.max_bytes, append=size),
            )
        raise SpoolFullError(
            f"spool {self.directory} is full ({self._disk_bytes} of {self.max_bytes} bytes): "
            f"stop acknowledging messages until the forwarder catches up"
        )

    def _write(self, fd: int, offset: int, record: bytes) -> None:
        """Write and (per policy) fsync a record; on failure cut it off again and raise."""
        try:
            view = memoryview(record)
            while view:
                view = view[os.write(fd, view) :]
            now = time.monotonic()
            if (
                self.fsync.mode is FsyncMode.ALWAYS
                or now - self._last_fsync >= self.fsync.interval_s
            ):
                os.fsync(fd)
                self._last_fsync = now
                self._fsyncs += 1
        except OSError as exc:
            os.ftruncate(fd, offset)  # all or nothing; if this fails too, that error propagates
            log.error("spool_append_failed", extra=kv(directory=str(self.directory), error=exc))
            if exc.errno in _DISK_FULL:
                with self._lock:
                    self._full_events += 1
                raise SpoolFullError(f"disk full under {self.directory}: {exc}") from exc
            raise SpoolError(f"cannot append to spool {self.directory}: {exc}") from exc

    def _rotate(self) -> None:
        os.fsync(self._fd)
        os.close(self._fd)
        self._active += 1
        self._create_segment(self._active)
        self._fd = os.open(self._path(self._active), os.O_WRONLY | os.O_APPEND)
        self._segments[self._active] = 0
        self._collect()  # the old segment may be forwarded already

    def _create_segment(self, segment: int) -> None:
        self._path(segment).touch()
        self._sync_directory()

    # -- reading and committing ------------------------------------------------------

    def wait_unread(self, lines: int, timeout: float) -> bool:
        """Wait up to ``timeout`` s until at least ``lines`` lines await `read`."""
        with self._data:
            return self._data.wait_for(lambda: self._total[0] - self._read_ord[0] >= lines, timeout)

    def read(self, max_lines: int, max_bytes: int) -> Batch:
        """The next lines after the last batch handed out: at most ``max_lines``, and at
        most ``max_bytes`` (line bytes + one newline each) unless a single line is larger."""
        with self._lock:
            lines: list[bytes] = []
            nbytes = 0
            pos = self._read_pos
            while len(lines) < max_lines:
                if pos.offset >= self._segments[pos.segment]:
                    if pos.segment == self._active:
                        break
                    pos = Position(pos.segment + 1, 0, 0)
                    continue
                record = self._read_record(pos)
                taken = 0
                for line in record.lines[pos.line :]:
                    cost = len(line) + 1
                    if len(lines) >= max_lines or (lines and nbytes + cost > max_bytes):
                        break
                    lines.append(line)
                    nbytes += cost
                    taken += 1
                if pos.line + taken < len(record.lines):
                    pos = Position(pos.segment, pos.offset, pos.line + taken)
                    break
                pos = Position(pos.segment, pos.offset + record.size, 0)
            self._read_pos = pos
            line_bytes = nbytes - len(lines)  # without the newlines
            self._read_ord = (self._read_ord[0] + len(lines), self._read_ord[1] + line_bytes)
            return Batch(lines, pos, self._read_ord)

    def rewind(self) -> None:
        """Hand out again, from the committed cursor, everything read but not committed."""
        with self._lock:
            self._read_pos = self._committed
            self._read_ord = self._committed_ord

    def commit(self, batch: Batch) -> None:
        """Persist that everything up to the end of ``batch`` is forwarded."""
        with self._lock:
            if batch.ordinal <= self._committed_ord:
                return
            self._committed_ord = batch.ordinal
            self._committed = batch.end
            self._collect()

    def _collect(self) -> None:
        """Persist the cursor, then delete the whole segments it has passed."""
        cursor = self._committed
        while cursor.segment != self._active and cursor.offset >= self._segments[cursor.segment]:
            cursor = Position(cursor.segment + 1, 0, 0)
        self._committed = cursor
        if self._read_pos.segment < cursor.segment:
            # A caught-up reader sits at the end of a segment being deleted.
            self._read_pos = cursor
        done = [segment for segment in self._segments if segment < cursor.segment]
        raw = _CURSOR.pack(cursor.segment, cursor.offset, cursor.line)
        tmp = self.directory / f"{_CURSOR_FILE}.tmp"
        tmp.write_bytes(raw + _LINE_LEN.pack(zlib.crc32(raw)))
        tmp.replace(self.directory / _CURSOR_FILE)
        for segment in done:
            if self._reader is not None and self._reader[0] == segment:
                os.close(self._reader[1])
                self._reader = None
            self._path(segment).unlink()
            self._disk_bytes -= self._segments.pop(segment)
        if done:
            self._sync_directory()

    def _read_fd(self, segment: int) -> int:
        if self._reader is None or self._reader[0] != segment:
            if self._reader is not None:
                os.close(self._reader[1])
            self._reader = (segment, os.open(self._path(segment), os.O_RDONLY))
        return self._reader[1]

    def _read_record(self, pos: Position) -> _Record:
        fd = self._read_fd(pos.segment)
        header = os.pread(fd, _HEADER.size, pos.offset)
        length = _HEADER.unpack(header)[0] if len(header) == _HEADER.size else 0
        record = _decode(header + os.pread(fd, length, pos.offset + _HEADER.size), 0)
        if record is None:
            raise SpoolCorruptError(f"{self._path(pos.segment)}: bad record at byte {pos.offset}")
        return record

    # -- the rest --------------------------------------------------------------------

    def stats(self) -> SpoolStats:
        with self._lock:
            depth_lines = self._total[0] - self._committed_ord[0]
            age = None
            if depth_lines:  # the append time in the header of the record at the cursor
                cursor = self._committed
                header = os.pread(self._read_fd(cursor.segment), _HEADER.size, cursor.offset)
                age = max(0.0, (time.time_ns() - _HEADER.unpack(header)[3]) / 1e9)
            return SpoolStats(
                depth_lines=depth_lines,
                depth_bytes=self._total[1] - self._committed_ord[1],
                disk_bytes=self._disk_bytes,
                segments=len(self._segments),
                oldest_age_s=age,
                appends=self._appends,
                appended_lines=self._appended_lines,
                fsyncs=self._fsyncs,
                full_events=self._full_events,
                torn_tail_bytes=self._torn_tail_bytes,
            )

    def close(self) -> None:
        """Fsync and close; the directory lock is released."""
        with self._append_lock, self._lock:
            if self._fd < 0:
                return
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            if self._reader is not None:
                os.close(self._reader[1])
                self._reader = None
            os.close(self._lock_fd)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sync_directory(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:016d}{_SEGMENT_SUFFIX}"


def _lock_directory(directory: Path) -> int:
    fd = os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SpoolLockedError(f"spool {directory} is in use by another process") from None
    return fd


def _encode(lines: Sequence[bytes]) -> bytes:
    payload = b"".join(
        itertools.chain.from_iterable((_LINE_LEN.pack(len(line)), line) for line in lines)
    )
    tail = struct.pack("<Iq", len(lines), time.time_ns()) + payload
    return struct.pack("<II", len(payload), zlib.crc32(tail)) + tail


def _decode(data: bytes, offset: int) -> _Record | None:
    """The record at ``offset``, or None if it is cut short or fails its checks."""
    if len(data) - offset < _HEADER.size:
        return None
    length, crc, count, append_ns = _HEADER.unpack_from(data, offset)
    end = offset + _HEADER.size + length
    if end > len(data) or zlib.crc32(memoryview(data)[offset + 8 : end]) != crc:
        return None
    lines: list[bytes] = []
    at = offset + _HEADER.size
    with contextlib.suppress(struct.error):
        for _ in range(count):
            (size,) = _LINE_LEN.unpack_from(data, at)
            lines.append(data[at + 4 : at + 4 + size])
            at += 4 + size
    if len(lines) != count or at != end:
        return None
    return _Record(lines, end - offset, append_ns)
