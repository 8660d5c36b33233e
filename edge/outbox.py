"""The edge agent's durable outbox: bounded store-and-forward from sources to MQTT.

Sources (the serial readers, the host-health sampler) `put` encoded messages;
the MQTT publisher `lease`s the oldest rows, publishes them at QoS 1 and
`ack`s each row when its PUBACK arrives. A row leaves the outbox only through
``ack``, through the low-priority drop policy below, or through `dead_letter`
(the broker refuses it for good, and the publisher kept it in its dead
letters). The outbox is one SQLite file in WAL mode (stdlib ``sqlite3``).

Priorities and the bound
    `Priority.HIGH` (payments, device state, alerts) is never dropped.
    `Priority.LOW` (status, sensor and host-health samples) may be. The size
    of a row is ``len(topic) + len(payload)`` in bytes; the bound is on the
    sum of those sizes, not on the file (SQLite pages, indexes and the WAL come
    on top, and the file does not shrink after a drain).

    * When a put would take the total past ``max_bytes``, expired low rows go
      first, then the oldest low rows (insertion order), until the new row
      fits. Each is counted as dropped (`DropReason.EXPIRED` /
      `DropReason.OVERFLOW`).
    * A low row that would not fit even then (the bound is full of high rows)
      is not stored: `PutOutcome.DROPPED`, counted as ``overflow``. Older low
      rows are then left alone.
    * A high row is stored even past ``max_bytes`` (after evicting low rows),
      up to ``hard_max_bytes`` (default 4 x ``max_bytes``). Past the hard cap,
      or when the disk refuses the write, `put` raises `OutboxFullError` and
      stores nothing: the caller must not send the device its LinkAck, so the
      device keeps the payment and re-sends it (back-pressure to the device).
    * Low rows older than ``low_priority_ttl_s`` are dropped as ``expired``
      before each lease and whenever the bound is hit. Age is wall-clock time
      (it must survive reboots), checked in insertion order: after a
      backwards clock step, a row is not expired before every older low row.
    * Rows currently leased (in flight) are never dropped.
    Drop, duplicate and seq-conflict counters live in the database, so they
    survive restarts; `OutboxStats.dropped_since_open` is the per-run figure
    (HostHealth ``outbox_dropped``).

Idempotent put
    A put with a ``seq`` whose ``(topic, seq, payload)`` is already queued is
    not stored again (`PutOutcome.DUPLICATE`, with the queued row's id): a
    device re-sending an unacknowledged payment is stored once, and the agent
    acknowledges it again. Device topics hold site, device and stream, so this
    is the ``(device, stream, seq)`` key. The window is the row's life in the
    outbox: once it is acked and deleted, a late retransmission is stored and
    delivered again, and the gateway's dedup (InfluxDB point identity) absorbs
    it. The same ``(topic, seq)`` with a *different* payload (a device whose
    seq restarted) is stored as a new row, logged and counted
    (``seq_conflicts``): treating it as a duplicate would lose a payment.

Durability (fsync policy)
    WAL mode. A transaction that stores at least one high-priority row commits
    with ``synchronous=FULL``: the WAL is fsync'd before `put` returns, so the
    payment survives power loss before the device gets its LinkAck.
    Low-priority-only puts, acks and drops commit with ``synchronous=NORMAL``
    (no fsync at commit; WAL mode still never tears or corrupts a row): power
    loss may lose the last low samples, or resurrect rows acked in the last
    moments, which are then delivered again (at-least-once). Every commit,
    FULL or NORMAL, survives a kill -9 of the agent. A payment put alone pays
    one fsync (the cost of the guarantee; bench/outbox.py measures it);
    `put_many` stores a batch in one transaction, one fsync for the lot, and
    is all-or-nothing. ``fsync_high_priority=False`` turns the FULL commits off
    (benchmarks only).

Delivery order
    `lease` hands out rows in insertion order across all priorities, which
    keeps every device's order (priority changes what is kept, not the order).
    Several rows of one device may be in flight at once: one MQTT client sends
    its QoS 1 publishes in order on its connection (paho re-sends unacked ones
    in order after a reconnect), and the broker keeps each topic's order, so
    in-order leases published in order by one client need no per-device
    stop-and-wait. (Across a device's topics, and across gateways sharing a
    subscription, arrival order is not guaranteed: consumers use ``seq``.)
    At most ``max_in_flight`` rows are leased at a time, which is the bounded
    window the publisher needs (paho must never be handed an unbounded
    backlog). A row the broker refuses is `defer`red: out of the window, still
    queued, so it holds no slot while the publisher waits to try it again; it
    comes back through `lease_again` (and may then arrive after newer rows of
    its device). Leases are in memory only: after a restart, or `release_all`,
    every unacked row is handed out again, oldest first.

Full disk
    A write the disk refuses (SQLite's FULL or IOERR: ENOSPC, EDQUOT, EIO) is
    rolled back and raised as `OutboxFullError`, whatever the call (put, ack,
    expiry); `disk_error` says why until a write commits again. Nothing is
    lost: a put stored nothing (back-pressure), an ack leaves its row queued
    (delivered again later), and expiry is housekeeping, so `lease` goes on
    without it: the publisher keeps delivering from a full disk. Acks delete
    rows, whose pages later puts reuse, so draining makes room inside the file.
    SQLite's WAL index (the ``-shm`` file) cannot be created on a full disk:
    `Outbox` then opens the file in exclusive locking mode, which keeps that
    index in memory, so an agent starting on a full disk can still deliver
    what is queued (no other process can open the file until it closes).

Memory
    SQLite's page cache is bounded at ``page_cache_kib`` (`PAGE_CACHE_KIB`, a
    quarter of SQLite's default): pages that fall out of it are read again
    from the file or the WAL, and a transaction that outgrows it spills to the
    WAL, still committed or rolled back as a whole. Durability and the fsync
    policy are unchanged.

Threads
    One connection guarded by one lock: serial reader threads put, the MQTT
    thread leases and acks, each call is one short critical section (a
    high-priority put holds the lock during its fsync). SQLite would
    serialise the writers anyway, and the in-memory totals and leases need the
    lock regardless. One process owns a file for put/lease/ack; another may
    open it only to read `stats` (``tillpulse edge status``).
"""

from __future__ import annotations

import enum
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import msgspec

from edge.errors import OutboxError, OutboxFullError, OutboxOpenError
from runtime.logs import kv
from wire.topics import Stream

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
MIB: Final = 1024 * 1024
_SQLITE_IOERR: Final = 10
_SQLITE_FULL: Final = 13
# SQLite's page cache, per connection (its default: 2,000 KiB). A quarter of that costs
# ~2% more CPU per put and holds ~0.5 MiB less at the max rate (BENCHMARKS.md, "Edge
# agent footprint"): on a Raspberry Pi the memory matters more.
PAGE_CACHE_KIB: Final = 512

_SCHEMA: Final = (
    # AUTOINCREMENT: ids are never reused, so insertion order is id order even
    # after the newest row was acked (the lease cursor relies on it).
    """CREATE TABLE IF NOT EXISTS outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        device TEXT NOT NULL,
        priority INTEGER NOT NULL,
        seq INTEGER,
        size INTEGER NOT NULL,
        created REAL NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_by_priority ON outbox (priority)",
    "CREATE INDEX IF NOT EXISTS outbox_by_topic_seq ON outbox (topic, seq) WHERE seq IS NOT NULL",
    """CREATE TABLE IF NOT EXISTS counters (
        name TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    ) WITHOUT ROWID""",
)


_ROW_COLUMNS: Final = "id, topic, payload, priority, device, seq, created"
_LEASE_SQL: Final = f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id > ? ORDER BY id LIMIT ?"
_ROW_SQL: Final = f"SELECT {_ROW_COLUMNS} FROM outbox WHERE id = ?"


class Priority(enum.IntEnum):
    LOW = 0  # samples: dropped oldest-first at the bound, expire after the TTL
    HIGH = 1  # payments, device state, alerts: never dropped


_HIGH_STREAMS: Final = frozenset({Stream.PAYMENT, Stream.STATE})


def priority_for(stream: Stream) -> Priority:
    """The outbox priority of a device stream."""
    return Priority.HIGH if stream in _HIGH_STREAMS else Priority.LOW


class DropReason(enum.StrEnum):
    OVERFLOW = "overflow"  # evicted (or refused) to keep the byte bound
    EXPIRED = "expired"  # older than the low-priority TTL


class PutOutcome(enum.StrEnum):
    STORED = "stored"  # a new row, durable per the fsync policy
    DUPLICATE = "duplicate"  # the same (topic, seq, payload) is already queued
    DROPPED = "dropped"  # low priority, no room: not stored, counted


_COUNTERS: Final = ("duplicates", "seq_conflicts", *(f"dropped_{r}" for r in DropReason))


# Records are msgspec structs, not dataclasses: msgspec is loaded anyway, and dataclasses
# would bring inspect and ast into the agent, ~0.7 MiB (BENCHMARKS.md, "Edge agent
# footprint"). Entry and Row hold only scalars, so the GC need not track them (gc=False).
class Entry(msgspec.Struct, frozen=True, gc=False):
    """One message to store: what the publisher will publish, and its dedup key."""

    topic: str
    payload: bytes
    priority: Priority
    device: str  # the device whose order is kept (the agent's own id for its messages)
    seq: int | None = None  # None: never deduplicated


class PutResult(msgspec.Struct, frozen=True, gc=False):
    outcome: PutOutcome
    row_id: int | None  # the stored or already-queued row; None when dropped

    @property
    def queued(self) -> bool:
        """The message is in the outbox: a serial frame may be acknowledged (LinkAck)."""
        return self.outcome is not PutOutcome.DROPPED


class Row(msgspec.Struct, frozen=True, gc=False):
    """A leased row: publish ``payload`` on ``topic``, then `Outbox.ack` ``row_id``."""

    row_id: int
    topic: str
    payload: bytes
    priority: Priority
    device: str
    seq: int | None
    created: float  # wall-clock seconds when it was put


class OutboxStats(msgspec.Struct, frozen=True):
    depth: dict[Priority, int]  # rows queued, in flight included
    size_bytes: dict[Priority, int]
    in_flight: int
    dropped: dict[DropReason, int]  # since the file was created
    dropped_since_open: int
    duplicates: int
    seq_conflicts: int
    oldest_age_s: float | None  # age of the oldest queued row

    @property
    def total_depth(self) -> int:
        return sum(self.depth.values())


class Outbox:
    """A bounded, durable, prioritised FIFO of MQTT messages; see the module docstring."""

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 * MIB,
        hard_max_bytes: int | None = None,
        low_priority_ttl_s: float | None = 24 * 3600.0,
        max_in_flight: int = 256,
        fsync_high_priority: bool = True,
        page_cache_kib: int = PAGE_CACHE_KIB,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = Path(path)
        self._max_bytes = max_bytes
        self._hard_max_bytes = 4 * max_bytes if hard_max_bytes is None else hard_max_bytes
        self._ttl_s = low_priority_ttl_s
        self._max_in_flight = max_in_flight
        self._fsync_high = fsync_high_priority
        self._clock = clock
        _check_settings(max_bytes, self._hard_max_bytes, low_priority_ttl_s, max_in_flight)
        if page_cache_kib < 1:
            raise ValueError(f"page_cache_kib must be at least 1, got {page_cache_kib}")
        self._lock = threading.Lock()
        self._in_flight: set[int] = set()
        self._cursor = 0  # highest id leased; every in-flight id is <= it
        self._synchronous_full: bool | None = None
        self._at_bound = False
        self._closed = False
        self.disk_error: str | None = None  # the last refused write, until one commits
        self._conn = _open(self._path)
        self._conn.execute(f"PRAGMA cache_size = -{int(page_cache_kib)}")  # negative: KiB
        self._reload()
        self._dropped_at_open = self._dropped_total()
        log.info(
            "outbox_opened",
            extra=kv(path=str(self._path), rows=sum(self._count.values()), bytes=self._total()),
        )

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()

    # -- sources ---------------------------------------------------------------------------

    def put(
        self, topic: str, payload: bytes, priority: Priority, device: str, seq: int | None
    ) -> bool:
        """Store one message; True if it is a new row.

        False means it was not stored now and needs no retry: the same
        ``(topic, seq, payload)`` is already queued (a retransmission), or it is
        a low-priority sample with no room (counted as dropped). Either way the
        serial frame may be acknowledged. `put_many` tells the outcomes apart.
        Raises `OutboxFullError` (do not acknowledge the frame) or `OutboxError`.
        """
        result = self.put_many([Entry(topic, payload, priority, device, seq)])[0]
        return result.outcome is PutOutcome.STORED

    def put_many(self, entries: Sequence[Entry]) -> list[PutResult]:
        """Store a batch in one transaction (one fsync if any entry is high priority).

        All or nothing: `OutboxFullError` (hard cap reached, disk full) or
        `OutboxError` store none of the batch.
        """
        if not entries:
            return []
        durable = any(entry.priority is Priority.HIGH for entry in entries)
        now = self._clock()
        with self._lock, self._write(durable=durable):
            return [self._put_one(entry, now) for entry in entries]

    # -- publisher -------------------------------------------------------------------------

    def lease(self, limit: int) -> list[Row]:
        """Hand out up to ``limit`` of the oldest rows not in flight, oldest first.

        Never more than ``max_in_flight`` rows are out at a time; an empty list
        means nothing is deliverable now (queue empty or window full).
        """
        with self._lock:
            try:
                self._expire_now()
            except OutboxFullError as exc:  # housekeeping: delivering matters more
                log.warning("outbox_expiry_failed", extra=kv(error=str(exc)))
            room = min(limit, self._max_in_flight - len(self._in_flight))
            if room <= 0:
                return []
            with self._errors():
                rows = _rows(self._conn.execute(_LEASE_SQL, (self._cursor, room)))
            if rows:
                self._cursor = rows[-1].row_id
                self._in_flight.update(row.row_id for row in rows)
            return rows

    def lease_again(self, row_ids: Iterable[int]) -> tuple[list[Row], set[int]]:
        """Hand out `defer`red rows again (a retry of rows the broker refused), oldest first.

        Returns the rows handed out, and the ids no longer queued (a sample dropped
        meanwhile). The other ids stay deferred: in flight already, or past the
        window's room (never more than ``max_in_flight`` rows are out).
        """
        with self._lock:
            room = max(0, self._max_in_flight - len(self._in_flight))
            wanted = sorted(set(row_ids) - self._in_flight)[:room]
            with self._errors():
                rows = [
                    row
                    for row_id in wanted  # at most a window of them: one lookup each
                    for row in _rows(self._conn.execute(_ROW_SQL, (row_id,)))
                ]
            self._in_flight.update(row.row_id for row in rows)
            return rows, set(wanted).difference(row.row_id for row in rows)

    def ack(self, row_id: int) -> None:
        """Delete a delivered row (its PUBACK arrived); a row already gone is ignored."""
        self.ack_many([row_id])

    def ack_many(self, row_ids: Iterable[int]) -> int:
        """Delete delivered rows in one transaction; returns how many were still queued."""
        return self._delete_rows(row_ids)

    def dead_letter(self, row_ids: Iterable[int]) -> int:
        """Delete rows the broker refuses for good, which the caller has kept in its dead
        letters; returns how many were still queued. One transaction, like `ack_many`."""
        return self._delete_rows(row_ids)

    def _delete_rows(self, row_ids: Iterable[int]) -> int:
        ids = list(row_ids)
        with self._lock:
            with self._write(durable=False):
                deleted = sum(self._delete_row(row_id) for row_id in ids)
            self._in_flight.difference_update(ids)
            return deleted

    def defer(self, row_ids: Iterable[int]) -> int:
        """Take in-flight rows the broker refused out of the window, keeping them queued.

        A refused row (a PUBACK with a failure reason: ACL, quota) is not
        deleted, and no longer occupies an in-flight slot; it is handed out again
        by `lease_again`, after `release_all` or after a restart. Returns how many
        were in flight.
        """
        with self._lock:
            deferred = self._in_flight.intersection(row_ids)
            self._in_flight -= deferred
        return len(deferred)

    def release_all(self) -> int:
        """Return every in-flight and deferred row to the queue (e.g. a new MQTT client).

        They are handed out again, in order, before any newer row. Returns how
        many were in flight.
        """
        with self._lock:
            released = len(self._in_flight)
            self._in_flight.clear()
            self._cursor = 0
        log.info("outbox_leases_released", extra=kv(rows=released))
        return released

    # -- status ----------------------------------------------------------------------------

    def expire(self) -> int:
        """Drop low rows past the TTL now (lease does it too); returns how many."""
        with self._lock:
            return self._expire_now()

    def stats(self) -> OutboxStats:
        with self._lock, self._errors():
            oldest = self._conn.execute("SELECT created FROM outbox ORDER BY id LIMIT 1").fetchone()
            dropped = {reason: self._counters[f"dropped_{reason}"] for reason in DropReason}
            return OutboxStats(
                depth=dict(self._count),
                size_bytes=dict(self._bytes),
                in_flight=len(self._in_flight),
                dropped=dropped,
                dropped_since_open=self._dropped_total() - self._dropped_at_open,
                duplicates=self._counters["duplicates"],
                seq_conflicts=self._counters["seq_conflicts"],
                oldest_age_s=None if oldest is None else max(0.0, self._clock() - oldest[0]),
            )

    # -- put internals (lock held, inside a write transaction) ------------------------------

    def _put_one(self, entry: Entry, now: float) -> PutResult:
        if entry.seq is not None:
            queued = self._find_queued(entry)
            if queued is not None:
                self._bump("duplicates")
                return PutResult(PutOutcome.DUPLICATE, queued)
        size = len(entry.topic.encode()) + len(entry.payload)
        if not self._make_room(size, entry.priority, now):
            self._bump(f"dropped_{DropReason.OVERFLOW}")
            return PutResult(PutOutcome.DROPPED, None)
        cursor = self._conn.execute(
            "INSERT INTO outbox (topic, payload, device, priority, seq, size, created)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (entry.topic, entry.payload, entry.device, int(entry.priority), entry.seq, size, now),
        )
        self._count[entry.priority] += 1
        self._bytes[entry.priority] += size
        assert cursor.lastrowid is not None  # an INSERT always sets it
        return PutResult(PutOutcome.STORED, cursor.lastrowid)

    def _find_queued(self, entry: Entry) -> int | None:
        """The id of a queued row with the same device, topic, seq and payload, if any."""
        rows = self._conn.execute(
            "SELECT id, payload FROM outbox WHERE topic = ? AND seq = ? AND device = ?",
            (entry.topic, entry.seq, entry.device),
        ).fetchall()
        for row_id, payload in rows:
            if payload == entry.payload:
                return int(row_id)
        if rows:
            self._bump("seq_conflicts")
            log.warning(
                "outbox_seq_conflict_stored_as_new",
                extra=kv(topic=entry.topic, seq=entry.seq, queued_rows=len(rows)),
            )
        return None

    def _make_room(self, size: int, priority: Priority, now: float) -> bool:
        """Drop low rows until ``size`` more bytes fit; False if a low row cannot fit."""
        if self._total() + size <= self._max_bytes:
            self._note_bound(reached=False)
            return True
        self._note_bound(reached=True)
        self._drop(self._expired_rows(now), DropReason.EXPIRED)
        excess = self._total() + size - self._max_bytes
        if excess > 0:
            victims, freed = self._oldest_low_rows(excess)
            if priority is Priority.LOW and freed < excess:
                return False
            self._drop(victims, DropReason.OVERFLOW)
        if self._total() + size > self._hard_max_bytes:
            raise OutboxFullError(
                f"outbox {self._path}: high-priority rows fill the hard cap of "
                f"{self._hard_max_bytes} bytes; nothing stored (apply back-pressure)"
            )
        return True

    def _note_bound(self, *, reached: bool) -> None:
        if reached and not self._at_bound:
            log.warning(
                "outbox_bound_reached",
                extra=kv(max_bytes=self._max_bytes, high_bytes=self._bytes[Priority.HIGH]),
            )
        elif self._at_bound and not reached:
            log.info("outbox_bound_cleared", extra=kv(max_bytes=self._max_bytes))
        self._at_bound = reached

    def _oldest_low_rows(self, excess: int) -> tuple[list[tuple[int, int]], int]:
        """The oldest low rows not in flight whose sizes add up to ``excess`` (or all)."""
        victims: list[tuple[int, int]] = []
        freed = 0
        with closing(
            self._conn.execute("SELECT id, size FROM outbox WHERE priority = 0 ORDER BY id")
        ) as cursor:
            for row_id, size in cursor:
                if row_id in self._in_flight:
                    continue
                victims.append((row_id, size))
                freed += size
                if freed >= excess:
                    break
        return victims, freed

    def _expired_rows(self, now: float) -> list[tuple[int, int]]:
        if self._ttl_s is None:
            return []
        cutoff = now - self._ttl_s
        expired: list[tuple[int, int]] = []
        with closing(
            self._conn.execute(
                "SELECT id, size, created FROM outbox WHERE priority = 0 ORDER BY id"
            )
        ) as cursor:
            for row_id, size, created in cursor:
                if created >= cutoff:
                    break
                if row_id not in self._in_flight:
                    expired.append((row_id, size))
        return expired

    def _drop(self, rows: list[tuple[int, int]], reason: DropReason) -> None:
        """Delete low rows and count them as dropped for ``reason``."""
        if not rows:
            return
        self._conn.executemany("DELETE FROM outbox WHERE id = ?", [(row_id,) for row_id, _ in rows])
        self._count[Priority.LOW] -= len(rows)
        self._bytes[Priority.LOW] -= sum(size for _, size in rows)
        self._bump(f"dropped_{reason}", len(rows))
        log.debug("outbox_dropped", extra=kv(reason=str(reason), rows=len(rows)))

    def _expire_now(self) -> int:
        """Drop expired low rows in a transaction of their own (lock held)."""
        with self._errors():
            expired = self._expired_rows(self._clock())
        if expired:
            with self._write(durable=False):
                self._drop(expired, DropReason.EXPIRED)
            log.info("outbox_expired", extra=kv(rows=len(expired), ttl_s=self._ttl_s))
        return len(expired)

    def _delete_row(self, row_id: int) -> bool:
        row = self._conn.execute("SELECT priority, size FROM outbox WHERE id = ?", (row_id,))
        found = row.fetchone()
        if found is None:
            return False
        self._conn.execute("DELETE FROM outbox WHERE id = ?", (row_id,))
        priority = Priority(found[0])
        self._count[priority] -= 1
        self._bytes[priority] -= found[1]
        return True

    def _bump(self, counter: str, amount: int = 1) -> None:
        self._conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (counter, amount),
        )
        self._counters[counter] += amount

    # -- transactions and state -------------------------------------------------------------

    @contextmanager
    def _write(self, *, durable: bool) -> Iterator[None]:
        """One write transaction (lock held); on failure, roll back and reload the totals."""
        self._check_open()
        try:
            self._set_synchronous(full=durable and self._fsync_high)
            self._conn.execute("BEGIN IMMEDIATE")
            yield
            self._conn.execute("COMMIT")
            self.disk_error = None
        except sqlite3.Error as exc:
            self._rollback()
            error = _translate(exc, self._path)
            if _is_disk_error(exc):
                self.disk_error = str(error)
            raise error from exc
        except BaseException:
            self._rollback()
            raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate SQLite errors of a read into `OutboxError`."""
        self._check_open()
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, self._path) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise OutboxError(f"outbox {self._path} is closed")

    def _set_synchronous(self, *, full: bool) -> None:
        if self._synchronous_full is not full:
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            self._synchronous_full = full

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._reload()

    def _reload(self) -> None:
        """Read the totals and counters from the database (at open, after a rollback)."""
        with self._errors():
            self._count = {priority: 0 for priority in Priority}
            self._bytes = {priority: 0 for priority in Priority}
            for priority, count, size in self._conn.execute(
                "SELECT priority, COUNT(*), COALESCE(SUM(size), 0) FROM outbox GROUP BY priority"
            ):
                self._count[Priority(priority)] = count
                self._bytes[Priority(priority)] = size
            self._counters = dict.fromkeys(_COUNTERS, 0)
            self._counters.update(self._conn.execute("SELECT name, value FROM counters"))

    def _total(self) -> int:
        return sum(self._bytes.values())

    def _dropped_total(self) -> int:
        return sum(self._counters[f"dropped_{reason}"] for reason in DropReason)


def _rows(cursor: sqlite3.Cursor) -> list[Row]:
    return [
        Row(row_id, topic, payload, Priority(prio), device, seq, created)
        for row_id, topic, payload, prio, device, seq, created in cursor
    ]


def _check_settings(
    max_bytes: int, hard_max_bytes: int, ttl_s: float | None, max_in_flight: int
) -> None:
    if max_bytes <= 0:
        raise ValueError(f"max_bytes must be positive, got {max_bytes}")
    if hard_max_bytes < max_bytes:
        raise ValueError(f"hard_max_bytes ({hard_max_bytes}) must be >= max_bytes ({max_bytes})")
    if ttl_s is not None and ttl_s <= 0:
        raise ValueError(f"low_priority_ttl_s must be positive or None, got {ttl_s}")
    if max_in_flight < 1:
        raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")


def _open(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the outbox database in WAL mode, or raise OutboxOpenError.

    If the disk is too full for SQLite's shared-memory WAL index, open it again
    in exclusive locking mode, which needs no new file (module docstring).
    """
    try:
        return _connect(path, exclusive=False)
    except _DiskFullAtOpen as exc:
        log.warning("outbox_opening_exclusive", extra=kv(path=str(path), reason=str(exc)))
        return _connect(path, exclusive=True)  # a new file on a full disk still fails


class _DiskFullAtOpen(OutboxOpenError):
    """Opening needed a write the disk refused; `_open` tries once more, exclusively."""


def _connect(path: Path, *, exclusive: bool) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise _open_error(path, exc) from exc
    try:
        if exclusive:
            conn.execute("PRAGMA locking_mode = EXCLUSIVE")
        _prepare(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(conn: sqlite3.Connection, path: Path) -> None:
    try:
        journal_mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0:  # a new file
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except sqlite3.Error as exc:
        if _is_disk_error(exc):
            raise _DiskFullAtOpen(str(_open_error(path, exc))) from exc
        raise _open_error(path, exc) from exc
    if version > SCHEMA_VERSION:
        raise OutboxOpenError(
            f"outbox {path} has schema version {version}, newer than this agent's "
            f"{SCHEMA_VERSION}: upgrade the agent or move the file aside"
        )
    if journal_mode != "wal":
        raise OutboxOpenError(
            f"outbox {path}: SQLite refused WAL mode (journal_mode={journal_mode}); "
            "put the file on a local filesystem"
        )


def _open_error(path: Path, exc: sqlite3.Error) -> OutboxOpenError:
    hint = {
        "SQLITE_CANTOPEN": "does the directory exist, and may the agent's user write to it?",
        "SQLITE_NOTADB": "the file is not an outbox database (or is corrupt); move it aside",
        "SQLITE_CORRUPT": "the database is corrupt; move it aside",
        "SQLITE_READONLY": "the file or its directory is read-only for the agent's user",
    }.get(getattr(exc, "sqlite_errorname", ""), "see SQLite's message")
    return OutboxOpenError(f"cannot open outbox {path}: {exc} ({hint})")


def _is_disk_error(exc: sqlite3.Error) -> bool:
    """The disk refused a write: full (ENOSPC), or an I/O error (EIO, and EDQUOT,
    which SQLite reports as a write I/O error)."""
    # Errors raised by the sqlite3 module itself (e.g. a closed connection) carry no code.
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF in (_SQLITE_FULL, _SQLITE_IOERR)


def _translate(exc: sqlite3.Error, path: Path) -> OutboxError:
    if _is_disk_error(exc):
        return OutboxFullError(f"outbox {path}: disk full or failing, nothing stored ({exc})")
    return OutboxError(f"outbox {path}: {exc}")
