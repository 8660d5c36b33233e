"""The forwarder, spool -> influxd 1.6: exact counts, outages, SIGKILL, dead letters.

Run as a script (``python -m tests.gateway.test_forwarder child ...``) it is a
gateway stand-in for the SIGKILL test: it appends the test's payments to a
spool in groups, printing each group's number once its append returned (the
point where the MQTT side would acknowledge), while a forwarder drains the
spool into influxd.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest

from gateway.errors import SpoolFullError
from gateway.forwarder import Forwarder, ForwarderSettings
from gateway.spool import Spool
from runtime.deadletters import DeadLetters
from runtime.influx_sinks import V1Sink, WriteResult
from testkit.factories import payment_lines
from testkit.servers import InfluxDB1Server, wait_until
from tests.conftest import SmallDisk
from tests.gateway import Child, payment_counts, payment_points, type_conflicts

FAST = ForwarderSettings(batch_lines=2_000, linger_s=0.02, backoff_max_s=0.5, config_retry_s=0.3)


@contextmanager
def forwarding(
    tmp_path: Path, url: str, settings: ForwarderSettings = FAST
) -> Iterator[tuple[Spool, Forwarder, DeadLetters]]:
    """A spool in tmp_path drained by a running forwarder into database ``gw`` at ``url``."""
    dead_letters = DeadLetters(tmp_path / "dead")
    with Spool(tmp_path / "spool") as spool, V1Sink(url, "gw") as sink:
        forwarder = Forwarder(spool, sink, dead_letters, settings)
        forwarder.start()
        try:
            yield spool, forwarder, dead_letters
        finally:
            forwarder.stop()
            dead_letters.close()


def append_in_groups(spool: Spool, lines: list[bytes], group: int = 500) -> None:
    for start in range(0, len(lines), group):
        spool.append(lines[start : start + group])


def landed(server: InfluxDB1Server, expected: int) -> bool:
    return payment_points(server, "gw") >= expected


@pytest.mark.integration
def test_exact_counts_end_to_end(tmp_path: Path, influxdb: InfluxDB1Server) -> None:
    influxdb.create_database("gw")
    lines = payment_lines(50_000)
    with forwarding(tmp_path, influxdb.url, ForwarderSettings()) as (spool, forwarder, _):
        append_in_groups(spool, lines)
        wait_until(lambda: spool.stats().depth_lines == 0, timeout=60)
        stats = forwarder.stats()
    assert payment_counts(influxdb, "gw") == (50_000, 50_000)
    assert (stats.lines_written, stats.dead_lettered, stats.retries) == (50_000, 0, 0)
    assert stats.batches >= 10 and stats.lag_s is None
    assert stats.latency_p50_s is not None and stats.latency_p99_s is not None


@pytest.mark.integration
@pytest.mark.slow
def test_influxd_killed_under_load_loses_and_duplicates_nothing(
    tmp_path: Path, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("gw")
    lines = payment_lines(30_000)
    done = threading.Event()

    def produce(spool: Spool) -> None:  # a steady load, before, during and after the outage
        for start in range(0, len(lines), 100):
            spool.append(lines[start : start + 100])
            done.wait(0.003)  # pacing the load, not synchronisation
        done.set()

    with forwarding(tmp_path, influxdb.url) as (spool, forwarder, _):
        producer = threading.Thread(target=produce, args=(spool,))
        producer.start()
        wait_until(lambda: landed(influxdb, 3_000), timeout=30)
        under_load = not done.is_set()
        influxdb.kill()
        producer.join()  # the rest of the load arrives while influxd is down
        wait_until(lambda: forwarder.stats().retries >= 3, timeout=30)
        grown_to = spool.stats().depth_lines
        influxdb.start()
        wait_until(lambda: spool.stats().depth_lines == 0, timeout=60)
        stats = forwarder.stats()
    assert payment_counts(influxdb, "gw") == (30_000, 30_000)
    assert under_load and grown_to > 10_000  # the spool took the load during the outage
    assert stats.retries >= 3 and stats.last_error is not None
    assert stats.dead_lettered == 0


def _child(spool_dir: str, url: str, total: int, resume: int) -> None:
    """The gateway stand-in (see the module docstring); runs until killed."""
    lines = payment_lines(total)
    with Spool(spool_dir) as spool, V1Sink(url, "gw") as sink:
        settings = ForwarderSettings(batch_lines=500, linger_s=0.01, backoff_max_s=0.5)
        forwarder = Forwarder(spool, sink, DeadLetters(Path(spool_dir) / "dead"), settings)
        forwarder.start()
        for group in range(resume, total // 200):
            spool.append(lines[group * 200 : (group + 1) * 200])
            sys.stdout.write(f"{group}\n")
            sys.stdout.flush()
        threading.Event().wait()


@pytest.mark.integration
@pytest.mark.slow
def test_gateway_sigkilled_and_restarted_loses_nothing(
    tmp_path: Path, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("gw")
    total = 40_000
    args = ["tests.gateway.test_forwarder", "child", str(tmp_path / "spool"), influxdb.url]
    first = Child(*args, str(total), "0")
    try:
        wait_until(lambda: landed(influxdb, 2_000), timeout=30)
    finally:
        first.kill()
    killed_at = payment_points(influxdb, "gw")
    assert killed_at < total  # the kill came in the middle of the work
    # the broker redelivers what was not acknowledged: from the first unreported group
    resume = int(first.lines[-1]) + 1 if first.lines else 0
    second = Child(*args, str(total), str(resume))
    try:
        wait_until(
            lambda: landed(influxdb, total),
            timeout=60,
            message=lambda: f"{payment_points(influxdb, 'gw')} of {total}",
        )
    finally:
        second.kill()
    assert payment_counts(influxdb, "gw") == (total, total)


@pytest.mark.integration
def test_bad_points_go_to_dead_letters_and_the_rest_lands(
    tmp_path: Path, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("gw")
    influxdb.write([payment_lines(1, start=10_000)[0].decode()], "gw")  # amount_minor: integer
    lines, bad = type_conflicts(payment_lines(3_000), every=300)
    with forwarding(tmp_path, influxdb.url) as (spool, forwarder, dead_letters):
        append_in_groups(spool, lines)
        wait_until(lambda: spool.stats().depth_lines == 0, timeout=30)
        stats = forwarder.stats()
        kept = dead_letters.read_all()
    assert payment_counts(influxdb, "gw") == (2_991, 2_991)
    assert (stats.lines_written, stats.dead_lettered) == (2_990, 10)
    assert {k.payload.encode() for k in kept} == bad
    assert all(
        "field type conflict" in k.reason and k.source.startswith("influxdb-v1") for k in kept
    )


@pytest.mark.integration
def test_a_missing_database_holds_the_spool_until_it_exists(
    tmp_path: Path, influxdb: InfluxDB1Server
) -> None:
    lines = payment_lines(1_000)
    with forwarding(tmp_path, influxdb.url) as (spool, forwarder, _):
        append_in_groups(spool, lines)
        wait_until(lambda: forwarder.stats().config_errors >= 2, timeout=10)
        stats = forwarder.stats()
        assert stats.last_error is not None
        assert 'HTTP 404: database not found: "gw"' in stats.last_error
        assert spool.stats().depth_lines == 1_000 and stats.lines_written == 0
        forwarder.stop()  # holding a batch it read: started again, it must not skip it
        forwarder.start()
        wait_until(lambda: forwarder.stats().config_errors >= 3, timeout=10)
        influxdb.create_database("gw")  # fixed: what the spool holds is replayed
        wait_until(lambda: spool.stats().depth_lines == 0, timeout=10)
    assert payment_counts(influxdb, "gw") == (1_000, 1_000)


if __name__ == "__main__" and sys.argv[1] == "child":
    _child(sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))


def appended(spool: Spool, lines: list[bytes]) -> bool:
    try:
        spool.append(lines)
    except SpoolFullError:
        return False
    return True


@pytest.mark.integration
def test_on_a_full_disk_the_forwarder_frees_the_room_new_appends_need(
    small_disk: SmallDisk, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("gw")
    lines = payment_lines(3_000)  # about three times what the 256 KiB disk holds
    groups = [lines[start : start + 50] for start in range(0, len(lines), 50)]
    dead_letters = DeadLetters(small_disk.path / "dead", max_bytes=64 << 10)
    with (
        Spool(small_disk.path / "spool", max_bytes=1 << 20, segment_bytes=16 << 10) as spool,
        V1Sink(influxdb.url, "gw") as sink,
    ):
        append_in_groups(spool, lines[:500], group=50)
        small_disk.fill()  # for good: the spool must make do with what it frees
        assert not appended(spool, groups[10]) and spool.stats().disk_full
        forwarder = Forwarder(spool, sink, dead_letters, FAST)
        forwarder.start()
        try:
            for group in groups[10:]:  # back-pressure: retried until the forwarder freed room
                wait_until(lambda g=group: appended(spool, g), 30, message="room again")
            wait_until(lambda: landed(influxdb, 3_000), 60, message="all forwarded")
            assert forwarder.stats().running
        finally:
            forwarder.stop()
        assert payment_counts(influxdb, "gw") == (3_000, 3_000)
        stats = spool.stats()
        assert stats.disk_full is False and stats.depth_lines == 0


class FailingOnce(V1Sink):
    """The real v1 sink, whose first write fails the way a bug would."""

    failed = False

    def write(self, lines: Sequence[bytes]) -> WriteResult:
        if not self.failed:
            self.failed = True
            raise RuntimeError("an error no sink classifies")
        return super().write(lines)


@pytest.mark.integration
def test_an_unexpected_write_error_is_counted_and_the_batch_retried(
    tmp_path: Path, influxdb: InfluxDB1Server
) -> None:
    influxdb.create_database("gw")
    dead_letters = DeadLetters(tmp_path / "dead")
    with Spool(tmp_path / "spool") as spool, FailingOnce(influxdb.url, "gw") as sink:
        forwarder = Forwarder(spool, sink, dead_letters, FAST)
        forwarder.start()
        try:
            append_in_groups(spool, payment_lines(3_000))
            wait_until(lambda: landed(influxdb, 3_000), timeout=30)
            stats = forwarder.stats()
        finally:
            forwarder.stop()
            dead_letters.close()
    assert stats.running and stats.internal_errors == 1
    assert payment_counts(influxdb, "gw") == (3_000, 3_000)
