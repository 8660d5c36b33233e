"""The gateway's durable spool: an append-only segment log of line-protocol lines.

The MQTT side `Spool.append`s the lines of many messages at once (group
commit) and acknowledges those messages to the broker only after ``append``
returned. The forwarder `Spool.read`s batches from the oldest unforwarded line
and `Spool.commit`s each batch once InfluxDB took it (or it was dead-lettered).
One process owns a spool directory (an exclusive ``flock`` on the directory
itself: taking it writes nothing, so it works on a full disk).

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

Full disk (no bookkeeping write on the recovery path)
    Opening a spool writes nothing (the first segment file is created by the
    first append). A commit moves the cursor in memory and deletes the
    segments it has passed *before* it writes the cursor file, and that write
    is opportunistic: when it fails (full disk, I/O error) it is counted
    (``cursor_write_errors``), ``cursor_persisted`` turns false, and the next
    commit or `close` tries again. Until then the file lags: after a crash
    lines are sent again (never skipped; deleted segments are never replayed),
    the at-least-once contract above. So a forwarder always frees space, even
    on a disk the spool itself filled.

Bound and back-pressure
    ``max_bytes`` bounds the segment files on disk, including the forwarded
    head of the oldest segment, which is deleted once the whole segment is
    forwarded (so up to ``segment_bytes`` of the bound can be already-forwarded
    data). An append that would pass it, or that meets a full or failing disk
    (ENOSPC, EDQUOT, EIO: when writing, fsyncing or creating the next
    segment), stores nothing and raises `SpoolFullError`; the event is counted
    and logged (once per run of full events), and `SpoolStats.full_reason`
    says why until an append succeeds again. The caller must then stop
    acknowledging MQTT messages (back-pressure: the broker keeps them in the
    persistent session) and retry the append later; it succeeds by itself
    once the forwarder or a person freed space. Payments are never dropped
    here. A disk-full append also retires a fully forwarded active segment
    (rotation), so its space is freed too.

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
from typing import Final, NoReturn

from gateway.errors import SpoolCorruptError, SpoolError, SpoolFullError, SpoolLockedError
from runtime.lifecycle import lock_directory
from runtime.logs import kv
from runtime.statefile import write_atomically

log = logging.getLogger(__name__)

_HEADER: Final = struct.Struct("<IIIq")  # payload length, crc32, line count, append ns
_LINE_LEN: Final = struct.Struct("<I")
_CURSOR: Final = struct.Struct("<QQQ")  # segment, record offset, lines consumed; + crc32
_SEGMENT_SUFFIX: Final = ".seg"
_CURSOR_FILE: Final = "cursor"
# Errors that mean "no room (or the disk hiccuped) now": back-pressure, tried again later.
_DISK_TRANSIENT: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO})


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
    full_events: int  # appends refused, for the bound or the disk
    disk_errors: int  # of those, refused by the disk (ENOSPC, EDQUOT, EIO)
    disk_full: bool  # the last append was refused by the disk
    at_max_bytes: bool  # the last append was refused by max_bytes
    full_reason: str | None  # why the last append was refused; None once one succeeds
    cursor_persisted: bool  # the cursor file holds the committed cursor
    cursor_write_errors: int
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
        self._disk_errors = self._cursor_write_errors = 0
        self._full_reason: str | None = None
        self._full_by_disk = False
        self._unclean_tail = False  # a failed append's bytes could not be cut off yet
        self._closed = False
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
        self._persisted = self._load_cursor()
        cursor = self._persisted or Position(0, 0, 0)
        for stale in [i for i in ids if i < cursor.segment]:  # forwarded before a crash
            self._path(stale).unlink()
            ids.remove(stale)
        if ids and ids != list(range(ids[0], ids[-1] + 1)):
            raise SpoolCorruptError(
                f"{self.directory}: segments missing between {ids[0]} and {ids[-1]}"
            )
        if not ids:
            cursor = Position(cursor.segment, 0, 0)
        elif cursor.segment < ids[0]:  # the cursor file lagged behind a deletion
            cursor = Position(ids[0], 0, 0)
        self._segments: dict[int, int] = {cursor.segment: 0}  # id -> valid size, oldest first
        self._torn_tail_bytes = 0
        lines = nbytes = 0
        for index, segment in enumerate(ids):
            size, cursor, seg_lines, seg_bytes = self._scan(
                segment, cursor, newest=index == len(ids) - 1
            )
            self._segments[segment] = size
            lines += seg_lines
            nbytes += seg_bytes
        self._active = max(self._segments)
        self._fd: int | None = None  # the active segment's, see `_active_fd`
        self._committed = self._read_pos = cursor
        self._total = (lines, nbytes)  # ordinals: lines/bytes ever appended in this run
        self._committed_ord = self._read_ord = (0, 0)
        self._disk_bytes = sum(self._segments.values())
        self._reader: tuple[int, int] | None = None  # (segment, fd) of the read handle
        try:
            self._active_fd()
        except OSError as exc:  # a full disk: the first append creates it
            if exc.errno not in _DISK_TRANSIENT:
                raise
            log.warning("spool_segment_not_created", extra=kv(error=str(exc)))
        self._collect()
        log.info(
            "spool_opened",
            extra=kv(
                directory=str(self.directory),
                segments=len(self._segments),
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

    def _load_cursor(self) -> Position | None:
        """The cursor file's position; None (replay from the oldest segment) if there is
        no readable one."""
        path = self.directory / _CURSOR_FILE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        if len(raw) == _CURSOR.size + _LINE_LEN.size:
            body, (crc,) = raw[: _CURSOR.size], _LINE_LEN.unpack(raw[_CURSOR.size :])
            if zlib.crc32(body) == crc:
                return Position(*_CURSOR.unpack(body))
        log.warning("spool_cursor_unreadable", extra=kv(path=str(path), action="replay_all"))
        return None

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
            try:
                with self._lock:
                    if self._segments[self._active] + len(record) > self.segment_bytes or (
                        self._full_by_disk and self._active_spent()
                    ):
                        self._rotate()  # first: it deletes the old segment if it is forwarded
                    self._check_room(len(record))
                    fd, offset = self._active_fd(), self._segments[self._active]
                self._write(fd, offset, record)
            except OSError as exc:
                if exc.errno not in _DISK_TRANSIENT:
                    raise SpoolError(f"cannot append to spool {self.directory}: {exc}") from exc
                with self._lock:
                    self._refuse(f"disk full under {self.directory}: {exc}", by_disk=True)
            with self._data:
                self._segments[self._active] += len(record)
                self._disk_bytes += len(record)
                self._total = (self._total[0] + len(lines), self._total[1] + sum(map(len, lines)))
                self._appends += 1
                self._appended_lines += len(lines)
                self._data.notify_all()
                if self._full_reason is not None:
                    self._full_reason, self._full_by_disk = None, False
                    log.info("spool_accepting_again", extra=kv(full_events=self._full_events))

    def _check_room(self, size: int) -> None:
        if self._disk_bytes + size <= self.max_bytes:
            return
        self._refuse(
            f"spool {self.directory} is at max_bytes ({self._disk_bytes} of {self.max_bytes} "
            f"bytes): stop acknowledging messages until the forwarder catches up",
            by_disk=False,
        )

    def _refuse(self, reason: str, *, by_disk: bool) -> NoReturn:
        """Count a refused append, log the first of a run of them, raise SpoolFullError."""
        self._full_events += 1
        self._disk_errors += by_disk
        if self._full_reason is None or by_disk != self._full_by_disk:
            log.warning(
                "spool_full",
                extra=kv(reason=reason, disk_bytes=self._disk_bytes, max_bytes=self.max_bytes),
            )
        self._full_reason, self._full_by_disk = reason, by_disk
        raise SpoolFullError(reason)

    def _write(self, fd: int, offset: int, record: bytes) -> None:
        """Write and (per policy) fsync a record; on failure cut it off again and raise.

        The segment then ends at ``offset`` again (all or nothing); if even that
        cut fails, it is done before the next write (O_APPEND writes at the end).
        """
        try:
            if self._unclean_tail:
                os.ftruncate(fd, offset)
                self._unclean_tail = False
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
        except OSError:
            try:
                os.ftruncate(fd, offset)
            except OSError:
                self._unclean_tail = True
            raise

    def _active_spent(self) -> bool:
        """The active segment holds data, all of it forwarded: rotating frees it."""
        size = self._segments[self._active]
        return size > 0 and self._committed == Position(self._active, size, 0)

    def _rotate(self) -> None:
        """Close the active segment and start the next (its file is created on first write)."""
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
        self._active += 1
        self._segments[self._active] = 0
        self._collect()  # the old segment may be forwarded already

    def _active_fd(self) -> int:
        """The active segment's file, opened (and created) when first needed: a segment
        that could not be created on a full disk is created by a later append."""
        if self._fd is None:
            self._fd = os.open(
                self._path(self._active), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644
            )
            self._sync_directory()
        return self._fd

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
        """Record that everything up to the end of ``batch`` is forwarded, and free the
        segments it completes; the cursor file follows when the disk allows (see the
        module docstring)."""
        with self._lock:
            if batch.ordinal <= self._committed_ord:
                return
            self._committed_ord = batch.ordinal
            self._committed = batch.end
            self._collect()

    def _collect(self) -> None:
        """Delete the whole segments the cursor has passed, then try to persist it.

        Deleting first frees space even when the cursor file cannot be written: a
        cursor file left behind points into a deleted segment, and opening the
        spool then starts at the oldest segment left (see `_open_log`).
        """
        cursor = self._committed
        while cursor.segment != self._active and cursor.offset >= self._segments[cursor.segment]:
            cursor = Position(cursor.segment + 1, 0, 0)
        self._committed = cursor
        if self._read_pos.segment < cursor.segment:
            # A caught-up reader sits at the end of a segment being deleted.
            self._read_pos = cursor
        done = [segment for segment in self._segments if segment < cursor.segment]
        for segment in done:
            if self._reader is not None and self._reader[0] == segment:
                os.close(self._reader[1])
                self._reader = None
            self._path(segment).unlink(missing_ok=True)  # missing: its creation had failed
            self._disk_bytes -= self._segments.pop(segment)
        if done:
            self._sync_directory()
        self._persist_cursor()

    def _persist_cursor(self) -> None:
        """Write the cursor file if it lags; on failure count, log and leave it lagging."""
        cursor = self._committed
        if cursor == self._persisted:
            return
        raw = _CURSOR.pack(cursor.segment, cursor.offset, cursor.line)
        try:
            # Not durable: a cursor a power cut took back (or left unreadable: replay
            # all) re-sends lines InfluxDB already holds, which land on the same points.
            write_atomically(
                self.directory / _CURSOR_FILE, raw + _LINE_LEN.pack(zlib.crc32(raw)), durable=False
            )
        except OSError as exc:
            self._cursor_write_errors += 1
            if self._cursor_write_errors == 1 or self._persisted is not None:
                log.warning(
                    "spool_cursor_not_persisted",
                    extra=kv(directory=str(self.directory), error=str(exc), action="retry_later"),
                )
            self._persisted = None  # unknown: retried on the next commit (and logged once)
            return
        self._persisted = cursor

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
                disk_errors=self._disk_errors,
                disk_full=self._full_reason is not None and self._full_by_disk,
                at_max_bytes=self._full_reason is not None and not self._full_by_disk,
                full_reason=self._full_reason,
                cursor_persisted=self._persisted == self._committed,
                cursor_write_errors=self._cursor_write_errors,
                torn_tail_bytes=self._torn_tail_bytes,
            )

    def close(self) -> None:
        """Fsync and close, trying once more to persist a lagging cursor; the directory
        lock is released."""
        with self._append_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            self._persist_cursor()
            if self._fd is not None:
                os.fsync(self._fd)
                os.close(self._fd)
                self._fd = None
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
    fd = lock_directory(directory)
    if fd is None:
        raise SpoolLockedError(f"spool {directory} is in use by another process")
    return fd


def _encode(lines: Sequence[bytes]) -> bytes:
    # On the ingest's hot path: iterated in C (no generator), the payload copied once
    # more only, into the record (the CRC runs over the header, then the payload).
    lengths = map(_LINE_LEN.pack, map(len, lines))
    payload = b"".join(itertools.chain.from_iterable(zip(lengths, lines, strict=True)))
    head = struct.pack("<Iq", len(lines), time.time_ns())
    crc = zlib.crc32(payload, zlib.crc32(head))
    return b"".join((struct.pack("<II", len(payload), crc), head, payload))


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
