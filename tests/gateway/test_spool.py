"""The durable spool: order, cursor, bound, framing, torn tails, one owner, full disks.

Run as a script (``python -m tests.gateway.test_spool append DIR``) it is the
child of the torn-tail test: it appends numbered groups for ever and prints
each group's number once its append returned.
"""

from __future__ import annotations

import errno
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway.errors import SpoolCorruptError, SpoolFullError, SpoolLockedError
from gateway.spool import Batch, FsyncMode, FsyncPolicy, Spool
from testkit.servers import wait_until
from tests.conftest import SmallDisk
from tests.gateway import Child

NO_FSYNC = FsyncPolicy(FsyncMode.INTERVAL, interval_s=3600.0)  # tests that do not lose power
MAX_BYTES = 64 * 1024


def small(directory: Path, fsync: FsyncPolicy = FsyncPolicy()) -> Spool:  # noqa: B008
    """A spool of 4 kB segments, bounded at 64 kB."""
    return Spool(directory, max_bytes=MAX_BYTES, segment_bytes=4096, fsync=fsync)


def drain(spool: Spool) -> list[bytes]:
    """Read and commit everything, returning the lines."""
    lines: list[bytes] = []
    while batch := spool.read(1000, 1 << 20):
        lines += batch.lines
        spool.commit(batch)
    return lines


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.seg"))


def test_lines_come_back_in_order_and_whole(tmp_path: Path) -> None:
    lines = [b"m v=1i 1", b'm s="two\nlines, one \\"point\\"" 2', b"", b"\x00\xff" * 100]
    with small(tmp_path / "s") as spool:
        spool.append(lines[:2])
        spool.append(lines[2:])
        assert drain(spool) == lines
        stats = spool.stats()
        assert (stats.depth_lines, stats.depth_bytes, stats.oldest_age_s) == (0, 0, None)
        assert (stats.appends, stats.appended_lines, stats.fsyncs) == (2, 4, 2)


def test_read_respects_line_and_byte_limits(tmp_path: Path) -> None:
    with small(tmp_path / "s", NO_FSYNC) as spool:
        spool.append([b"x" * 9] * 10)  # 10 bytes each with the newline
        assert len(spool.read(3, 1 << 20)) == 3
        assert len(spool.read(100, 25)) == 2
        assert len(spool.read(100, 5)) == 1  # one line even when it alone is over the limit
        assert len(spool.read(100, 1 << 20)) == 4
        assert len(spool.read(100, 1 << 20)) == 0


def test_restart_resumes_at_the_committed_cursor(tmp_path: Path) -> None:
    lines = [f"m v={i}i {i}".encode() for i in range(100)]
    with small(tmp_path / "s") as spool:
        spool.append(lines[:60])
        spool.append(lines[60:])
        spool.commit(spool.read(25, 1 << 20))  # ends inside the first record
        spool.read(50, 1 << 20)  # read, never committed: handed out again
    with small(tmp_path / "s") as spool:
        assert spool.stats().depth_lines == 75
        assert drain(spool) == lines[25:]
    with small(tmp_path / "s") as spool:
        assert drain(spool) == []


def test_forwarded_segments_are_deleted(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with small(directory, NO_FSYNC) as spool:
        for i in range(40):
            spool.append([b"y" * 200, str(i).encode()])
        assert len(segments(directory)) > 2
        assert len(drain(spool)) == 80
        assert len(segments(directory)) == 1  # only the one still written to
        assert spool.stats().segments == 1


def test_a_caught_up_reader_survives_the_rotation_that_deletes_its_segment(
    tmp_path: Path,
) -> None:
    # The forwarder keeps up: it reads and commits everything, its read position
    # at the very end of the active segment; the next append rotates and the
    # old segment is deleted under it.
    with small(tmp_path / "s", NO_FSYNC) as spool:
        forwarded: list[bytes] = []
        for i in range(200):
            spool.append([b"z" * 200, str(i).encode()])
            batch = spool.read(1000, 1 << 20)
            spool.commit(batch)
            forwarded += batch.lines
        assert forwarded == [line for i in range(200) for line in (b"z" * 200, str(i).encode())]
        assert spool.stats().segments == 1


def test_full_spool_refuses_appends_and_counts_them(tmp_path: Path) -> None:
    with small(tmp_path / "s", NO_FSYNC) as spool:
        stored = 0
        with pytest.raises(SpoolFullError, match="stop acknowledging"):
            while True:
                spool.append([b"z" * 500])
                stored += 1
        with pytest.raises(SpoolFullError):
            spool.append([b"z" * 500])
        stats = spool.stats()
        assert stats.full_events == 2
        assert stats.disk_bytes <= MAX_BYTES
        assert stats.depth_lines == stored  # nothing of the refused appends was kept
        assert len(drain(spool)) == stored
        spool.append([b"room again"])  # the forwarded segments made room
    with small(tmp_path / "s") as spool:
        assert drain(spool) == [b"room again"]


def test_a_spool_of_one_segment_frees_it_once_forwarded(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", max_bytes=8192, segment_bytes=8192, fsync=NO_FSYNC) as spool:
        for round_ in range(3):
            with pytest.raises(SpoolFullError):
                while True:
                    spool.append([str(round_).encode() * 1000])
            assert set(drain(spool)) == {str(round_).encode() * 1000}


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EIO])
def test_a_full_disk_stores_nothing_of_the_append(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    real_write = os.write

    def half_then_fail(fd: int, data: bytes | memoryview) -> int:
        real_write(fd, data[: len(data) // 2])
        raise OSError(code, os.strerror(code))

    with small(tmp_path / "s") as spool:
        spool.append([b"before"])
        monkeypatch.setattr(os, "write", half_then_fail)
        with pytest.raises(SpoolFullError, match="disk full"):
            spool.append([b"lost" * 100])
        monkeypatch.undo()
        assert spool.stats().disk_full
        spool.append([b"after"])
        stats = spool.stats()
        assert (stats.full_events, stats.disk_errors, stats.disk_full) == (1, 1, False)
        assert drain(spool) == [b"before", b"after"]
    with small(tmp_path / "s") as spool:
        assert spool.stats().torn_tail_bytes == 0


# ------------------------------------------- a full disk, on a real small tmpfs


def fill_spool(spool: Spool, line: bytes) -> int:
    """Append ``line`` until the spool refuses; how many appends it took."""
    stored = 0
    with pytest.raises(SpoolFullError):
        while True:
            spool.append([line])
            stored += 1
    return stored


def test_a_spool_opens_on_a_full_disk_and_drains_it(small_disk: SmallDisk) -> None:
    directory = small_disk.path / "s"
    with small(directory) as spool:
        spool.append([b"first", b"second"])
        spool.commit(spool.read(1, 1 << 20))
    small_disk.fill()
    with small(directory) as spool:  # opening writes nothing
        assert drain(spool) == [b"second"]
        stored = fill_spool(spool, b"x" * 500)  # what still fits in the segment's last page
        reason = spool.stats().full_reason
        assert reason is not None and reason.startswith(f"disk full under {directory}")
        small_disk.free()
        spool.append([b"after"])  # resumes by itself once space is back
        assert spool.stats().full_reason is None
    with small(directory) as spool:
        assert drain(spool) == [b"x" * 500] * stored + [b"after"]


def test_a_spool_that_filled_the_disk_frees_it_by_forwarding(small_disk: SmallDisk) -> None:
    # max_bytes is larger than the disk: the spool's own segments fill it, and only
    # committing (deleting forwarded segments) can make room again.
    with Spool(small_disk.path / "s", max_bytes=1 << 20, segment_bytes=16384) as spool:
        stored = fill_spool(spool, b"p" * 1000)
        stats = spool.stats()
        assert stats.disk_full and not stats.at_max_bytes
        assert stats.disk_errors == 1 and stats.depth_lines == stored
        assert len(drain(spool)) == stored  # commits on a full disk: no error
        spool.append([b"room again"])
        stats = spool.stats()
        assert stats.cursor_persisted and not stats.disk_full
        assert drain(spool) == [b"room again"]


def test_a_full_disk_while_rotating_refuses_the_append_cleanly(small_disk: SmallDisk) -> None:
    directory = small_disk.path / "s"
    with small(directory, NO_FSYNC) as spool:
        while len(segments(directory)) < 2:
            spool.append([b"r" * 500])
        small_disk.fill()
        fill_spool(spool, b"r" * 500)  # the refused one needs a new segment (a rotation)
        assert spool.stats().disk_full
        small_disk.free()
        spool.append([b"after"])
        assert drain(spool)[-1] == b"after"


def test_a_segment_of_forwarded_data_is_retired_when_the_disk_is_full(
    small_disk: SmallDisk,
) -> None:
    # One segment bigger than the disk: deleting whole forwarded segments frees nothing,
    # so once the disk refused an append, the spent active segment is rotated away.
    directory = small_disk.path / "s"
    with Spool(directory, max_bytes=4 << 20, segment_bytes=1 << 20) as spool:
        stored = fill_spool(spool, b"q" * 1000)
        assert len(segments(directory)) == 1
        assert len(drain(spool)) == stored
        spool.append([b"after"])
        assert drain(spool) == [b"after"]
        assert len(segments(directory)) == 1


def test_a_cursor_that_cannot_be_written_lags_and_replays_never_skips(
    small_disk: SmallDisk,
) -> None:
    directory = small_disk.path / "s"
    lines = [f"m v={i}i".encode() for i in range(10)]
    with small(directory) as spool:
        spool.append(lines)
        spool.commit(spool.read(2, 1 << 20))
        small_disk.fill()
        spool.commit(spool.read(3, 1 << 20))  # persisted only in memory
        stats = spool.stats()
        assert (stats.cursor_persisted, stats.cursor_write_errors) == (False, 1)
        assert stats.depth_lines == 5
    with small(directory) as spool:  # as after a crash: the file still says 2
        assert drain(spool) == lines[2:]
        small_disk.free()
        spool.append([b"m v=10i"])
        spool.commit(spool.read(1, 1 << 20))
        assert spool.stats().cursor_persisted
    with small(directory) as spool:
        assert drain(spool) == []


def test_an_append_larger_than_a_segment_is_refused(tmp_path: Path) -> None:
    with small(tmp_path / "s") as spool, pytest.raises(ValueError, match="fewer lines"):
        spool.append([b"w" * 5000])


def test_interval_policy_fsyncs_less(tmp_path: Path) -> None:
    with small(tmp_path / "s", NO_FSYNC) as spool:
        for _ in range(10):
            spool.append([b"v"])
        assert spool.stats().fsyncs <= 1


def test_oldest_age_is_the_first_uncommitted_append(tmp_path: Path) -> None:
    with small(tmp_path / "s") as spool:
        spool.append([b"a"])
        age = spool.stats().oldest_age_s
        assert age is not None and 0 <= age < 60


def test_a_torn_tail_is_cut_at_every_offset(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with small(directory) as spool:
        spool.append([b"first", b"append"])
        spool.append([b"second append, cut short"])
    segment = segments(directory)[0]
    whole = segment.read_bytes()
    first_size = 20 + 4 + 5 + 4 + 6
    for cut in range(first_size, len(whole)):
        segment.write_bytes(whole[:cut])
        with small(directory) as spool:
            assert spool.stats().torn_tail_bytes == cut - first_size
            assert spool.read(10, 1 << 20).lines == [b"first", b"append"]
        assert segment.stat().st_size == first_size


def test_garbage_after_the_last_record_is_cut(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with small(directory) as spool:
        spool.append([b"kept"])
    with segments(directory)[-1].open("ab") as f:
        f.write(b"\x00" * 4096)  # a file extended with zeros by a power cut
    with small(directory) as spool:
        assert drain(spool) == [b"kept"]
        spool.append([b"after"])
    with small(directory) as spool:
        assert drain(spool) == [b"after"]


def test_damage_before_the_tail_is_an_error_not_a_guess(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    with small(directory, NO_FSYNC) as spool:
        for _ in range(30):
            spool.append([b"u" * 300])
    oldest = segments(directory)[0]
    data = bytearray(oldest.read_bytes())
    data[100] ^= 0xFF
    oldest.write_bytes(bytes(data))
    with pytest.raises(SpoolCorruptError, match="bad record at byte 0"):
        small(directory)


def test_one_owner_per_directory(tmp_path: Path) -> None:
    with small(tmp_path / "s"), pytest.raises(SpoolLockedError):
        small(tmp_path / "s")
    small(tmp_path / "s").close()  # released on close


def test_a_reader_waits_for_appends(tmp_path: Path) -> None:
    with small(tmp_path / "s") as spool:
        assert not spool.wait_unread(1, timeout=0.01)
        appender = threading.Timer(0.05, spool.append, args=([b"late"],))
        appender.start()
        assert spool.wait_unread(1, timeout=10)
        appender.join()


# --------------------------------------------------------------- the property


class SpoolMachine(RuleBasedStateMachine):
    """Any mix of appends, reads, commits, rewinds and reopens (some after a torn write)
    hands out exactly the appended lines, in order, from the committed cursor on."""

    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="spool-prop-"))
        self.spool = self._open()
        self.appended: list[bytes] = []
        self.read_to = 0
        self.committed = 0
        self.pending: list[tuple[Batch, int]] = []  # batches read, with their end index

    def _open(self) -> Spool:
        return Spool(self.directory, max_bytes=1 << 20, segment_bytes=4096, fsync=NO_FSYNC)

    @rule(lines=st.lists(st.binary(max_size=300), min_size=1, max_size=12))
    def append(self, lines: list[bytes]) -> None:
        self.spool.append(lines)
        self.appended += lines

    @rule(max_lines=st.integers(1, 25), max_bytes=st.integers(1, 2500))
    def read(self, max_lines: int, max_bytes: int) -> None:
        batch = self.spool.read(max_lines, max_bytes)
        end = self.read_to + len(batch)
        assert batch.lines == self.appended[self.read_to : end]
        size = sum(len(line) + 1 for line in batch.lines)
        assert len(batch) <= max_lines and (len(batch) <= 1 or size <= max_bytes)
        if end < len(self.appended):
            assert len(batch) == max_lines or size + len(self.appended[end]) + 1 > max_bytes
        self.read_to = end
        self.pending.append((batch, end))

    @precondition(lambda self: self.pending)
    @rule(data=st.data())
    def commit(self, data: st.DataObject) -> None:
        index = data.draw(st.integers(0, len(self.pending) - 1))
        batch, end = self.pending[index]
        self.spool.commit(batch)
        self.committed = max(self.committed, end)
        del self.pending[: index + 1]

    @rule()
    def rewind(self) -> None:
        self.spool.rewind()
        self.read_to = self.committed  # batches read before stay committable

    @rule(torn=st.binary(min_size=0, max_size=40))
    def reopen(self, torn: bytes) -> None:
        self.spool.close()
        with segments(self.directory)[-1].open("ab") as f:
            f.write(torn)  # an append that was cut short
        self.spool = self._open()
        assert self.spool.stats().torn_tail_bytes == len(torn)
        self.read_to = self.committed
        self.pending = []

    @invariant()
    def depth_is_what_was_not_committed(self) -> None:
        stats = self.spool.stats()
        rest = self.appended[self.committed :]
        assert (stats.depth_lines, stats.depth_bytes) == (len(rest), sum(map(len, rest)))
        assert stats.segments == len(segments(self.directory))

    def teardown(self) -> None:
        self.spool.close()
        shutil.rmtree(self.directory)


TestSpoolProperty = SpoolMachine.TestCase
TestSpoolProperty.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)


# ------------------------------------------------------- a child killed mid-append


def _append_forever(directory: str) -> None:
    """The child: append numbered groups of large lines; report each returned append."""
    with Spool(directory, max_bytes=1 << 30, segment_bytes=8 << 20) as spool:
        group = 0
        while True:
            spool.append([f"{group}:{i}:".encode() + b"p" * 2000 for i in range(200)])
            sys.stdout.write(f"{group}\n")
            sys.stdout.flush()
            group += 1


@pytest.mark.slow
def test_kill_mid_append_keeps_every_returned_append(tmp_path: Path) -> None:
    directory = tmp_path / "s"
    child = Child("tests.gateway.test_spool", "append", str(directory))
    try:
        wait_until(lambda: len(child.lines) >= 40, timeout=30, message=lambda: f"{child.lines}")
    finally:
        child.kill()
    returned = len(child.lines)
    with Spool(directory, max_bytes=1 << 30, segment_bytes=8 << 20) as spool:
        groups = [int(line.split(b":")[0]) for line in drain(spool)]
    # every returned append is there, whole and in order; at most the one in flight
    # when the kill came may be there too (written, not yet reported); nothing else
    present = len(groups) // 200
    assert present in (returned, returned + 1)
    assert groups == [g for g in range(present) for _ in range(200)]


if __name__ == "__main__" and sys.argv[1] == "append":
    _append_forever(sys.argv[2])
