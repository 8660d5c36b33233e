"""The edge outbox: order, idempotence, the byte bound and priorities, TTL, restarts, crashes.

Time is a fake clock wherever a test depends on it. The crash test kills a real
writer process with SIGKILL; the property test runs random interleavings of
put / lease / ack / release / reopen / clock steps against a model.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from edge.errors import OutboxError, OutboxFullError, OutboxOpenError
from edge.outbox import (
    DropReason,
    Entry,
    Outbox,
    Priority,
    PutOutcome,
    Row,
    priority_for,
)
from tests.conftest import SmallDisk
from wire.topics import Stream, device_topic

REPO = Path(__file__).resolve().parents[2]


class FakeClock:
    def __init__(self, now: float = 1_764_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def topic(device: str, stream: Stream = Stream.PAYMENT) -> str:
    return device_topic("store-1", device, stream)


def payment(device: str, seq: int, size: int = 100) -> Entry:
    return Entry(
        topic(device), f"{device}:{seq}:".encode().ljust(size, b"p"), Priority.HIGH, device, seq
    )


def sample(device: str, seq: int, size: int = 100) -> Entry:
    body = f"{device}:{seq}:".encode().ljust(size, b"s")
    return Entry(topic(device, Stream.STATUS), body, Priority.LOW, device, seq)


def entry_size(entry: Entry) -> int:
    return len(entry.topic) + len(entry.payload)


def queued_seqs(outbox: Outbox) -> list[int | None]:
    """Every queued row's seq, oldest first (leases them all, then gives them back)."""
    rows = drain_lease(outbox)
    outbox.release_all()
    return [row.seq for row in rows]


def drain_lease(outbox: Outbox) -> list[Row]:
    rows: list[Row] = []
    while batch := outbox.lease(10_000):
        rows.extend(batch)
    return rows


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "outbox.db"


@pytest.fixture
def outbox(db: Path, clock: FakeClock) -> Iterator[Outbox]:
    with Outbox(db, max_bytes=10_000, max_in_flight=10_000, clock=clock) as box:
        yield box


# -- order and idempotence ------------------------------------------------------------------


def test_rows_are_leased_oldest_first_keeping_every_devices_order(outbox: Outbox) -> None:
    devices = ["pos-1", "pos-2", "env-1"]
    for seq in range(30):
        entry = (payment if seq % 3 else sample)(devices[seq % 3], seq, size=50)
        assert outbox.put(entry.topic, entry.payload, entry.priority, entry.device, entry.seq)
    leased = [row for _ in range(8) for row in outbox.lease(4)]
    assert [row.seq for row in leased] == list(range(30))
    for device in devices:
        mine = [row.row_id for row in leased if row.device == device]
        assert mine == sorted(mine)
    assert leased[0].topic == topic("pos-1", Stream.STATUS) and leased[1].priority is Priority.HIGH


def test_a_retransmitted_event_is_stored_once(outbox: Outbox) -> None:
    first = payment("pos-1", 7)
    [stored] = outbox.put_many([first])
    again = outbox.put_many([first, first])
    assert [result.outcome for result in again] == [PutOutcome.DUPLICATE] * 2
    assert {result.row_id for result in again} == {stored.row_id}
    assert outbox.put(*_args(first)) is False
    assert queued_seqs(outbox) == [7]
    assert outbox.stats().duplicates == 3


def test_duplicate_put_returns_the_queued_row_even_while_it_is_in_flight(outbox: Outbox) -> None:
    [stored] = outbox.put_many([payment("pos-1", 1)])
    [row] = outbox.lease(10)
    [again] = outbox.put_many([payment("pos-1", 1)])
    assert stored.outcome is PutOutcome.STORED and stored.queued
    assert again.outcome is PutOutcome.DUPLICATE and again.row_id == stored.row_id == row.row_id


def test_same_seq_on_another_stream_or_device_is_a_different_event(outbox: Outbox) -> None:
    results = outbox.put_many([payment("pos-1", 1), sample("pos-1", 1), payment("pos-2", 1)])
    assert [result.outcome for result in results] == [PutOutcome.STORED] * 3


def test_same_seq_with_another_payload_is_stored_and_counted_as_a_conflict(
    outbox: Outbox,
) -> None:
    outbox.put_many([payment("pos-1", 1)])
    other = Entry(topic("pos-1"), b"a different payment", Priority.HIGH, "pos-1", 1)
    assert outbox.put_many([other])[0].outcome is PutOutcome.STORED
    assert queued_seqs(outbox) == [1, 1]
    assert outbox.stats().seq_conflicts == 1


def test_a_retransmission_after_the_ack_is_stored_again(outbox: Outbox) -> None:
    """The dedup window is the row's life in the outbox; the gateway dedups the rest."""
    outbox.put_many([payment("pos-1", 1)])
    outbox.ack(outbox.lease(1)[0].row_id)
    assert outbox.put_many([payment("pos-1", 1)])[0].outcome is PutOutcome.STORED


def test_entries_without_seq_are_never_deduplicated(outbox: Outbox) -> None:
    entry = Entry(topic("agent-1", Stream.STATE), b"{}", Priority.HIGH, "agent-1")
    assert [r.outcome for r in outbox.put_many([entry, entry])] == [PutOutcome.STORED] * 2


def test_stream_priorities() -> None:
    assert priority_for(Stream.PAYMENT) is Priority.HIGH
    assert priority_for(Stream.STATE) is Priority.HIGH
    for stream in (Stream.STATUS, Stream.SENSOR, Stream.HEALTH):
        assert priority_for(stream) is Priority.LOW


# -- the byte bound and priorities ----------------------------------------------------------


def test_bound_drops_oldest_low_priority_rows_first_and_counts_them(outbox: Outbox) -> None:
    size = entry_size(sample("env-1", 0, size=100))
    fits = 10_000 // size
    outbox.put_many([sample("env-1", seq, size=100) for seq in range(fits + 5)])
    stats = outbox.stats()
    assert stats.depth[Priority.LOW] == fits
    assert stats.size_bytes[Priority.LOW] <= 10_000
    assert stats.dropped == {DropReason.OVERFLOW: 5, DropReason.EXPIRED: 0}
    assert queued_seqs(outbox) == list(range(5, fits + 5))


def test_high_priority_evicts_low_and_is_never_dropped(outbox: Outbox) -> None:
    outbox.put_many([sample("env-1", seq, size=500) for seq in range(15)])
    assert outbox.stats().depth[Priority.LOW] == 15
    results = outbox.put_many([payment("pos-1", seq, size=500) for seq in range(30)])
    assert all(result.outcome is PutOutcome.STORED for result in results)
    stats = outbox.stats()
    assert stats.depth == {Priority.LOW: 0, Priority.HIGH: 30}
    assert stats.size_bytes[Priority.HIGH] > 10_000  # past the soft bound, under the hard cap
    assert stats.dropped[DropReason.OVERFLOW] == 15


def test_a_sample_that_cannot_fit_is_refused_and_counted(outbox: Outbox) -> None:
    outbox.put_many([payment("pos-1", seq, size=1000) for seq in range(12)])
    [result] = outbox.put_many([sample("env-1", 1)])
    assert result.outcome is PutOutcome.DROPPED and not result.queued and result.row_id is None
    assert outbox.put(*_args(sample("env-1", 2))) is False
    assert outbox.stats().dropped[DropReason.OVERFLOW] == 2
    assert outbox.stats().depth[Priority.LOW] == 0


def test_past_the_hard_cap_a_payment_is_refused_with_back_pressure(
    db: Path, clock: FakeClock
) -> None:
    with Outbox(db, max_bytes=1_000, hard_max_bytes=2_000, clock=clock) as box:
        stored = 0
        with pytest.raises(OutboxFullError, match="hard cap of 2000 bytes"):
            for seq in range(100):
                box.put(*_args(payment("pos-1", seq, size=200)))
                stored += 1
        assert (
            box.stats().depth[Priority.HIGH]
            == stored
            == 2_000 // entry_size(payment("pos-1", 0, size=200))
        )
        box.ack(box.lease(1)[0].row_id)
        assert box.put(*_args(payment("pos-1", stored, size=200)))


def test_put_many_is_all_or_nothing(db: Path, clock: FakeClock) -> None:
    with Outbox(db, max_bytes=1_000, hard_max_bytes=1_000, clock=clock) as box:
        box.put_many([sample("env-1", 1)])
        with pytest.raises(OutboxFullError):
            box.put_many([payment("pos-1", seq, size=300) for seq in range(5)])
        stats = box.stats()
        assert stats.depth == {Priority.LOW: 1, Priority.HIGH: 0}
        assert stats.dropped[DropReason.OVERFLOW] == 0  # the eviction was rolled back too
        assert queued_seqs(box) == [1]


def test_in_flight_samples_are_not_evicted(outbox: Outbox) -> None:
    outbox.put_many([sample("env-1", seq, size=900) for seq in range(10)])
    in_flight = outbox.lease(3)
    outbox.put_many([payment("pos-1", seq, size=900) for seq in range(10)])
    assert outbox.stats().depth[Priority.LOW] == 3
    outbox.ack_many(row.row_id for row in in_flight)
    assert outbox.stats().depth[Priority.LOW] == 0


def test_disk_full_is_a_clear_error_and_stores_nothing(outbox: Outbox) -> None:
    outbox.put_many([payment("pos-1", 0)])
    pages = outbox._conn.execute("PRAGMA page_count").fetchone()[0]
    outbox._conn.execute(f"PRAGMA max_page_count = {pages}")  # the file may not grow: SQLITE_FULL
    with pytest.raises(OutboxFullError, match="disk full"):
        outbox.put_many([payment("pos-1", seq, size=3000) for seq in range(1, 4)])
    assert outbox.stats().depth[Priority.HIGH] == 1
    assert queued_seqs(outbox) == [0]


def test_a_real_full_disk_is_back_pressure_and_leasing_goes_on_until_space_is_back(
    small_disk_factory: Callable[..., SmallDisk], clock: FakeClock
) -> None:
    disk = small_disk_factory(size_bytes=2 << 20)
    with Outbox(disk.path / "outbox.db", low_priority_ttl_s=60.0, clock=clock) as box:
        box.put_many([sample("env-1", 1), *(payment("pos-1", seq) for seq in range(1, 6))])
        clock.now += 61  # the sample expires: the next lease wants to delete it
        disk.fill()

        with pytest.raises(OutboxFullError, match="disk full"):
            box.put_many([payment("pos-1", 6)])
        assert box.disk_error is not None and "disk full" in box.disk_error
        rows = box.lease(100)  # expiry fails, delivering does not
        assert [row.seq for row in rows] == [1, 1, 2, 3, 4, 5]
        with pytest.raises(OutboxFullError):
            box.ack_many(row.row_id for row in rows)
        assert box.stats().depth == {Priority.LOW: 1, Priority.HIGH: 5}  # nothing lost

        disk.free()
        box.put_many([payment("pos-1", 6)])
        assert box.disk_error is None
        assert box.ack_many(row.row_id for row in rows) == 6
        assert box.stats().depth == {Priority.LOW: 0, Priority.HIGH: 1}


def test_an_outbox_opens_on_a_full_disk_and_hands_out_what_it_holds(
    small_disk_factory: Callable[..., SmallDisk],
) -> None:
    disk = small_disk_factory(size_bytes=2 << 20)
    db = disk.path / "outbox.db"
    with Outbox(db) as box:
        box.put_many([payment("pos-1", seq) for seq in range(10)])
    # A clean close removes the WAL and its index; on a full disk SQLite cannot make a new
    # index file, so a plain open fails ("disk I/O error").
    assert not db.with_name("outbox.db-shm").exists()
    disk.fill()

    with Outbox(db) as box:
        rows = box.lease(100)
        assert [row.seq for row in rows] == list(range(10))
        with pytest.raises(OutboxFullError):
            box.put_many([payment("pos-1", 10)])
        disk.free()
        assert box.ack_many(row.row_id for row in rows) == 10
        box.put_many([payment("pos-1", 10)])
        assert box.stats().depth[Priority.HIGH] == 1


# -- TTL ------------------------------------------------------------------------------------


def test_samples_past_the_ttl_are_dropped_and_counted_payments_never(
    db: Path, clock: FakeClock
) -> None:
    with Outbox(db, low_priority_ttl_s=60.0, clock=clock) as box:
        box.put_many([sample("env-1", 1), payment("pos-1", 1)])
        clock.now += 30
        box.put_many([sample("env-1", 2)])
        clock.now += 31  # the first sample is 61 s old, the second 31 s
        assert [row.seq for row in box.lease(10)] == [1, 2]
        assert [row.priority for row in box.lease(10)] == []
        stats = box.stats()
        assert stats.dropped[DropReason.EXPIRED] == 1
        assert stats.depth == {Priority.LOW: 1, Priority.HIGH: 1}
        assert stats.oldest_age_s == pytest.approx(61.0)
        clock.now += 3600
        assert box.expire() == 0  # the last sample is in flight: never dropped under the lease
        box.release_all()
        assert box.expire() == 1


def test_ttl_none_keeps_samples_forever(db: Path, clock: FakeClock) -> None:
    with Outbox(db, low_priority_ttl_s=None, clock=clock) as box:
        box.put_many([sample("env-1", 1)])
        clock.now += 10 * 365 * 86400
        assert box.expire() == 0 and len(box.lease(10)) == 1


# -- lease, ack, release --------------------------------------------------------------------


def test_ack_deletes_only_the_acked_row(outbox: Outbox) -> None:
    outbox.put_many([payment("pos-1", seq) for seq in range(3)])
    rows = outbox.lease(3)
    outbox.ack(rows[1].row_id)
    assert outbox.ack_many([rows[1].row_id, 999_999]) == 0  # already gone, never existed
    assert outbox.stats().depth[Priority.HIGH] == 2
    outbox.release_all()
    assert [row.seq for row in outbox.lease(10)] == [0, 2]


def test_lease_never_hands_out_more_than_max_in_flight(db: Path, clock: FakeClock) -> None:
    with Outbox(db, max_in_flight=5, clock=clock) as box:
        box.put_many([payment("pos-1", seq) for seq in range(20)])
        first = box.lease(100)
        assert len(first) == 5 and box.lease(100) == [] and box.stats().in_flight == 5
        box.ack_many(row.row_id for row in first[:2])
        assert [row.seq for row in box.lease(100)] == [5, 6]


def test_release_all_hands_the_in_flight_rows_out_again_first(outbox: Outbox) -> None:
    outbox.put_many([payment("pos-1", seq) for seq in range(6)])
    outbox.lease(4)
    assert outbox.release_all() == 4
    outbox.put_many([payment("pos-1", 6)])
    assert [row.seq for row in outbox.lease(100)] == list(range(7))


def test_deferred_rows_leave_the_window_and_come_back_after_release_all(
    db: Path, clock: FakeClock
) -> None:
    with Outbox(db, max_in_flight=2, clock=clock) as box:
        box.put_many([payment("pos-1", seq) for seq in range(4)])
        refused, delivered = box.lease(2)
        assert box.defer([refused.row_id, 999]) == 1 and box.stats().in_flight == 1
        box.ack(delivered.row_id)
        assert [row.seq for row in box.lease(10)] == [2, 3]  # not the refused one again
        assert box.stats().depth[Priority.HIGH] == 3
        box.release_all()
        assert [row.seq for row in box.lease(10)] == [0, 2]


def test_lease_again_hands_deferred_rows_out_within_the_window(db: Path, clock: FakeClock) -> None:
    with Outbox(db, max_in_flight=3, clock=clock) as box:
        box.put_many([payment("pos-1", seq) for seq in range(5)])
        refused = box.lease(3)
        box.defer([row.row_id for row in refused])
        newer = box.lease(10)
        assert [row.seq for row in newer] == [3, 4]  # deferred rows hold no slot
        rows, gone = box.lease_again(row.row_id for row in reversed(refused))
        assert rows == refused[:1] and gone == set()  # one slot left: the oldest goes
        assert box.lease_again([refused[0].row_id]) == ([], set())  # in flight already
        box.ack_many(row.row_id for row in [*newer, *rows])  # the oldest got through
        rows, gone = box.lease_again(row.row_id for row in refused)
        assert rows == refused[1:] and gone == {refused[0].row_id}
        assert box.stats().in_flight == 2


def test_lease_again_says_which_rows_are_gone(db: Path, clock: FakeClock) -> None:
    """A deferred sample may be dropped (TTL, bound) while it waits for its retry."""
    with Outbox(db, low_priority_ttl_s=60, clock=clock) as box:
        box.put_many([sample("env-1", 0), payment("pos-1", 1)])
        refused = box.lease(2)
        box.defer([row.row_id for row in refused])
        clock.now += 61
        assert box.expire() == 1
        rows, gone = box.lease_again(row.row_id for row in refused)
        assert [row.seq for row in rows] == [1] and gone == {refused[0].row_id}


def test_dead_lettered_rows_leave_the_outbox_whatever_their_priority(outbox: Outbox) -> None:
    outbox.put_many([payment("pos-1", 0), sample("env-1", 1), payment("pos-1", 2)])
    refused = outbox.lease(2)
    outbox.defer([row.row_id for row in refused])
    assert outbox.dead_letter([*(row.row_id for row in refused), 999]) == 2
    stats = outbox.stats()
    assert stats.total_depth == 1 and stats.in_flight == 0
    assert stats.size_bytes[Priority.LOW] == 0 and sum(stats.dropped.values()) == 0
    assert outbox.lease_again(row.row_id for row in refused) == ([], {r.row_id for r in refused})
    assert [row.seq for row in outbox.lease(10)] == [2]


def test_ids_are_never_reused_so_a_row_put_after_acking_the_newest_is_leased(
    outbox: Outbox,
) -> None:
    outbox.put_many([payment("pos-1", 1)])
    [row] = outbox.lease(10)
    outbox.ack(row.row_id)
    outbox.put_many([payment("pos-1", 2)])
    [after] = outbox.lease(10)
    assert after.seq == 2 and after.row_id > row.row_id


def test_drain_of_100k_rows_through_a_bounded_window_in_order(db: Path) -> None:
    total, window = 100_000, 256
    with Outbox(db, max_bytes=512 * 1024 * 1024, max_in_flight=window) as box:
        for start in range(0, total, 10_000):
            box.put_many(
                [payment(f"pos-{seq % 7}", seq, size=60) for seq in range(start, start + 10_000)]
            )
        delivered: list[int | None] = []
        while rows := box.lease(window):
            assert box.stats().in_flight <= window
            delivered.extend(row.seq for row in rows)
            box.ack_many(row.row_id for row in rows)
        assert delivered == list(range(total))
        assert box.stats().total_depth == 0


def test_threads_put_while_another_leases_and_acks(db: Path) -> None:
    per_device, devices = 1_500, ["pos-1", "pos-2", "pos-3"]
    received: list[Row] = []
    with Outbox(db, fsync_high_priority=False, max_in_flight=64) as box:

        def produce(device: str) -> None:
            for seq in range(per_device):
                box.put(*_args(payment(device, seq, size=40)))

        def consume() -> None:
            while len(received) < per_device * len(devices):
                rows = box.lease(64)
                received.extend(rows)
                box.ack_many(row.row_id for row in rows)

        threads = [threading.Thread(target=produce, args=(d,)) for d in devices]
        threads.append(threading.Thread(target=consume))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not any(thread.is_alive() for thread in threads)
        assert box.stats().total_depth == 0
    for device in devices:
        assert [row.seq for row in received if row.device == device] == list(range(per_device))


# -- restarts and crashes -------------------------------------------------------------------


def test_reopen_keeps_unacked_rows_and_counters(db: Path, clock: FakeClock) -> None:
    with Outbox(db, max_bytes=2_000, clock=clock) as box:
        box.put_many([sample("env-1", seq, size=200) for seq in range(12)])
        box.put_many([payment("pos-1", 1), payment("pos-1", 1)])
        rows = box.lease(3)
        box.ack(rows[0].row_id)  # rows 1 and 2 stay in flight when the agent stops
        before = box.stats()
    with Outbox(db, max_bytes=2_000, clock=clock) as box:
        after = box.stats()
        assert after.dropped == before.dropped and after.dropped[DropReason.OVERFLOW] > 0
        assert after.duplicates == before.duplicates == 1
        assert after.dropped_since_open == 0 and after.in_flight == 0
        assert after.depth == before.depth and after.depth[Priority.HIGH] == 1
        assert [row.row_id for row in box.lease(2)] == [row.row_id for row in rows[1:]]


def test_status_may_read_stats_while_the_agent_has_the_file_open(outbox: Outbox, db: Path) -> None:
    outbox.put_many([payment("pos-1", 1), sample("env-1", 1)])
    with Outbox(db) as reader:  # as `tillpulse edge status` does, from another process
        assert reader.stats().depth == outbox.stats().depth == {Priority.LOW: 1, Priority.HIGH: 1}


CHILD = """
import hashlib, os, sys
from edge.outbox import Entry, Outbox, Priority
path, seq = sys.argv[1], int(sys.argv[2])
box = Outbox(path, max_bytes=1 << 30)
def entry(seq):
    body = os.urandom(50 + seq * 7919 % 3000)  # rows of 1 to several pages
    payload = seq.to_bytes(8, "big") + hashlib.sha256(body).digest() + body
    return Entry("tp/v1/dev/store-1/pos-1/payment", payload, Priority.HIGH, "pos-1", seq)
while True:
    batch = [entry(s) for s in range(seq, seq + 1 + seq % 4)]  # put_many of 1 to 4
    box.put_many(batch)
    sys.stdout.write("".join(f"{e.seq}\\n" for e in batch))
    sys.stdout.flush()
    seq += len(batch)
"""


def run_and_kill_writer(db: Path, first_seq: int, kill_after: int) -> set[int]:
    """Start a writer process, SIGKILL it mid-loop; the seqs it reported as committed."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with subprocess.Popen(
        [sys.executable, "-c", CHILD, str(db), str(first_seq)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    ) as child:
        assert child.stdout is not None
        reported: set[int] = set()
        while len(reported) < kill_after:
            line = child.stdout.readline()
            assert line, f"writer exited early with {child.wait()}"
            reported.add(int(line))
        child.send_signal(signal.SIGKILL)
        rest, _ = child.communicate()
        assert child.returncode == -signal.SIGKILL
    # Lines it managed to write before the kill count too; a cut-off last line does not.
    reported.update(int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n"))
    return reported


def stored_rows(db: Path) -> dict[int, bytes]:
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return dict(conn.execute("SELECT seq, payload FROM outbox"))


def test_sigkill_of_a_writer_loses_nothing_it_reported_and_tears_nothing(db: Path) -> None:
    committed: set[int] = set()
    next_seq = 0
    for _ in range(3):
        committed |= run_and_kill_writer(db, next_seq, kill_after=300)
        with Outbox(db, max_bytes=1 << 30) as box:  # recovery runs here, as after a crash
            assert box.stats().depth[Priority.HIGH] >= len(committed)
        rows = stored_rows(db)
        assert committed <= rows.keys()
        for seq, payload in rows.items():
            digest, body = payload[8:40], payload[40:]
            assert int.from_bytes(payload[:8], "big") == seq
            assert hashlib.sha256(body).digest() == digest, f"row {seq} is torn"
        next_seq = max(rows) + 1


# -- property: any interleaving keeps the invariants ----------------------------------------

MACHINE_DEVICES = ("pos-1", "pos-2", "env-1")
MACHINE_MAX_BYTES, MACHINE_HARD_MAX_BYTES, MACHINE_WINDOW = 2_000, 3_000, 8


class OutboxMachine(RuleBasedStateMachine):
    """Random put / lease / ack / defer / lease again / dead-letter / release / reopen /
    clock steps, checked against a model.

    The model remembers every stored row. The database must hold exactly the
    unacked, not dead-lettered high rows and a subset of the unacked low rows, the
    missing ones counted as dropped; a lease never hands out a row twice in one
    epoch (since open or release_all), nor a device's row while an older queued
    row of that device has not been handed out; only a deferred row is leased
    again; at the end every queued row is delivered.
    """

    def __init__(self) -> None:
        super().__init__()
        self.tmp = tempfile.TemporaryDirectory()
        self.path = Path(self.tmp.name) / "outbox.db"
        self.clock = FakeClock()
        self.box = self.open()
        self.stored: dict[int, Entry] = {}  # row id -> what was put
        self.acked: set[int] = set()
        self.handed_out: set[int] = set()  # leased in this epoch
        self.deferred: set[int] = set()  # refused by the broker in this epoch
        self.dead: set[int] = set()  # dead-lettered: refused for good
        self.refused = 0  # low puts refused for lack of room
        self.next_seq: Counter[str] = Counter()

    def open(self) -> Outbox:
        return Outbox(
            self.path,
            max_bytes=MACHINE_MAX_BYTES,
            hard_max_bytes=MACHINE_HARD_MAX_BYTES,
            low_priority_ttl_s=30.0,
            max_in_flight=MACHINE_WINDOW,
            fsync_high_priority=False,  # reopening in-process needs no fsync; keeps it fast
            clock=self.clock,
        )

    def db_rows(self) -> dict[int, str]:
        """Row id -> device of every row in the file, read through a connection of our own."""
        with closing(sqlite3.connect(self.path)) as conn:
            return dict(conn.execute("SELECT id, device FROM outbox"))

    def in_flight(self) -> set[int]:
        return self.handed_out - self.acked - self.deferred - self.dead

    def new_epoch(self) -> None:
        self.handed_out.clear()
        self.deferred.clear()

    @rule(
        device=st.sampled_from(MACHINE_DEVICES),
        high=st.booleans(),
        size=st.integers(10, 700),
        count=st.integers(1, 3),
    )
    def put(self, device: str, high: bool, size: int, count: int) -> None:
        make = payment if high else sample
        entries = [make(device, self.next_seq[device] + i, size) for i in range(count)]
        self.next_seq[device] += count
        try:
            results = self.box.put_many(entries)
        except OutboxFullError:
            assert high, "only a high-priority put may hit the hard cap"
            event("put refused at the hard cap")
            return
        for entry, result in zip(entries, results, strict=True):
            if result.outcome is PutOutcome.DROPPED:
                assert not high
                event("sample refused for lack of room")
                self.refused += 1
            else:
                assert result.outcome is PutOutcome.STORED and result.row_id is not None
                self.stored[result.row_id] = entry
        self.check_bound(high=high, last_stored=results[-1].outcome is PutOutcome.STORED)

    def check_bound(self, *, high: bool, last_stored: bool) -> None:
        total = sum(self.box.stats().size_bytes.values())
        assert total <= MACHINE_HARD_MAX_BYTES
        if high and total > MACHINE_MAX_BYTES:  # only in-flight samples may be left
            low = {i for i in self.db_rows() if self.stored[i].priority is Priority.LOW}
            assert low <= self.in_flight()
        if not high and last_stored:
            assert total <= MACHINE_MAX_BYTES

    @precondition(lambda self: self.stored.keys() - self.acked)
    @rule(data=st.data())
    def put_again(self, data: st.DataObject) -> None:
        """A retransmission of a queued event is not stored twice."""
        row_id = data.draw(st.sampled_from(sorted(self.stored.keys() - self.acked)))
        if row_id in self.db_rows():
            [result] = self.box.put_many([self.stored[row_id]])
            assert result.outcome is PutOutcome.DUPLICATE and result.row_id == row_id

    @rule(limit=st.integers(1, 12))
    def lease(self, limit: int) -> None:
        self.checked_lease(limit)

    def checked_lease(self, limit: int) -> list[Row]:
        rows = self.box.lease(limit)
        db = self.db_rows()
        assert [row.row_id for row in rows] == sorted(row.row_id for row in rows)
        for row in rows:
            assert row.row_id not in self.handed_out, "handed out twice in one epoch"
            older = {i for i, device in db.items() if device == row.device and i < row.row_id}
            assert older <= self.handed_out, "a device's row before an older one"
            self.handed_out.add(row.row_id)
            assert (
                Entry(row.topic, row.payload, row.priority, row.device, row.seq)
                == (self.stored[row.row_id])
            )
        return rows

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        chosen = data.draw(
            st.lists(st.sampled_from(sorted(self.in_flight())), min_size=1, unique=True)
        )
        assert self.box.ack_many(chosen) == len(chosen)
        self.acked.update(chosen)

    @precondition(lambda self: self.in_flight())
    @rule(data=st.data())
    def defer(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.in_flight())), max_size=3))
        assert self.box.defer(chosen) == len(set(chosen))
        self.deferred.update(chosen)

    @precondition(lambda self: self.deferred)
    @rule(data=st.data())
    def lease_again(self, data: st.DataObject) -> None:
        chosen = data.draw(st.lists(st.sampled_from(sorted(self.deferred)), max_size=4))
        wanted = sorted(set(chosen))[: MACHINE_WINDOW - len(self.in_flight())]
        db = self.db_rows()
        rows, gone = self.box.lease_again(chosen)
        assert [row.row_id for row in rows] == [i for i in wanted if i in db]
        assert gone == {i for i in wanted if i not in db}
        for row in rows:
            entry = self.stored[row.row_id]
            assert (row.topic, row.payload, row.device, row.seq) == (
                entry.topic,
                entry.payload,
                entry.device,
                entry.seq,
            )
        self.deferred -= {row.row_id for row in rows}  # a dropped one stays as it was

    @precondition(lambda self: self.in_flight() | self.deferred)
    @rule(data=st.data())
    def dead_letter(self, data: st.DataObject) -> None:
        candidates = sorted(self.in_flight() | self.deferred)
        chosen = set(data.draw(st.lists(st.sampled_from(candidates), max_size=3)))
        queued = chosen & self.db_rows().keys()  # a deferred sample may be dropped already
        assert self.box.dead_letter(chosen) == len(queued)
        self.dead |= queued
        self.deferred -= queued

    @precondition(lambda self: self.acked)
    @rule(data=st.data())
    def ack_again(self, data: st.DataObject) -> None:
        assert self.box.ack_many([data.draw(st.sampled_from(sorted(self.acked)))]) == 0

    @rule()
    def release_all(self) -> None:
        assert self.box.release_all() == len(self.in_flight())
        self.new_epoch()

    @rule()
    def reopen(self) -> None:
        before = self.box.stats()
        self.box.close()
        self.box = self.open()
        self.new_epoch()
        after = self.box.stats()
        assert after.dropped == before.dropped and after.dropped_since_open == 0
        assert after.depth == before.depth and after.duplicates == before.duplicates

    @rule(seconds=st.sampled_from([0.5, 5.0, 20.0, 31.0]))
    def advance_clock(self, seconds: float) -> None:
        self.clock.now += seconds

    @rule()
    def expire(self) -> None:
        self.box.expire()

    @rule()
    def deliver_everything(self) -> None:
        """Ack what is in flight, then lease and ack until nothing is left."""
        in_flight = self.in_flight()
        assert self.box.ack_many(in_flight) == len(in_flight)
        self.acked |= in_flight
        self.release_all()  # the deferred rows too
        while rows := self.checked_lease(MACHINE_WINDOW):
            assert self.box.ack_many(row.row_id for row in rows) == len(rows)
            self.acked.update(row.row_id for row in rows)
        assert self.box.stats().total_depth == 0
        high = {i for i, entry in self.stored.items() if entry.priority is Priority.HIGH}
        assert high <= self.acked | self.dead, "a high-priority row was never delivered"

    @invariant()
    def database_matches_model(self) -> None:
        db = self.db_rows()
        unacked = self.stored.keys() - self.acked - self.dead
        high = {i for i in unacked if self.stored[i].priority is Priority.HIGH}
        assert db.keys() & (self.acked | self.dead) == set()
        assert {i for i in db if self.stored[i].priority is Priority.HIGH} == high
        assert db.keys() <= unacked
        dropped = unacked - db.keys()
        assert not dropped & self.in_flight(), "an in-flight row was dropped"
        stats = self.box.stats()
        assert sum(stats.dropped.values()) == len(dropped) + self.refused
        for reason, count in stats.dropped.items():
            if count:
                event(f"samples dropped: {reason}")
        assert stats.total_depth == len(db) and stats.depth[Priority.HIGH] == len(high)
        assert sum(stats.size_bytes.values()) == sum(entry_size(self.stored[i]) for i in db)
        assert stats.in_flight == len(self.in_flight()) <= MACHINE_WINDOW

    def teardown(self) -> None:
        try:
            self.deliver_everything()
        finally:
            self.box.close()
            self.tmp.cleanup()


TestOutboxMachine = OutboxMachine.TestCase
TestOutboxMachine.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- errors ---------------------------------------------------------------------------------


def test_a_file_that_is_not_a_database_is_a_clear_error(db: Path) -> None:
    db.write_bytes(b"this is not an sqlite database\n" * 200)
    with pytest.raises(OutboxOpenError, match=r"cannot open outbox .*outbox\.db.*move it aside"):
        Outbox(db)


def test_an_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(OutboxOpenError, match=r"a-file/outbox\.db.*does the directory exist"):
        Outbox(tmp_path / "a-file" / "outbox.db")


def test_a_newer_schema_is_refused(db: Path) -> None:
    Outbox(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(OutboxOpenError, match="schema version 99"):
        Outbox(db)


def test_use_after_close_is_an_outbox_error(db: Path) -> None:
    box = Outbox(db)
    box.close()
    with pytest.raises(OutboxError, match="closed"):
        box.put(*_args(payment("pos-1", 1)))


@pytest.mark.parametrize(
    ("settings_", "message"),
    [
        ({"max_bytes": 0}, "max_bytes must be positive"),
        ({"max_bytes": 10, "hard_max_bytes": 5}, "hard_max_bytes"),
        ({"low_priority_ttl_s": 0}, "low_priority_ttl_s"),
        ({"max_in_flight": 0}, "max_in_flight"),
    ],
)
def test_bad_settings_are_refused(db: Path, settings_: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Outbox(db, **settings_)  # type: ignore[arg-type]


def _args(entry: Entry) -> tuple[str, bytes, Priority, str, int | None]:
    return entry.topic, entry.payload, entry.priority, entry.device, entry.seq
