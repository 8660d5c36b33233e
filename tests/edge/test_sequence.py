"""The agent's sequence file: blocks reserved on disk before use, on a real full disk too."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import EdgeError, SequenceError
from edge.sequence import BLOCK, SequenceFile
from tests.conftest import SmallDisk


def test_numbers_go_on_across_restarts_and_a_crash_only_leaves_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "agent.seq"
    first = SequenceFile(path)
    handed_out = [first.next() for _ in range(BLOCK + 5)]  # into a second block
    after_crash = SequenceFile(path)  # the first one is never closed: as after kill -9
    assert handed_out == list(range(BLOCK + 5))
    assert after_crash.next() == 2 * BLOCK  # the rest of the block is skipped, never reused


def test_a_full_disk_hands_out_nothing_unreserved_and_recovers(small_disk: SmallDisk) -> None:
    path = small_disk.path / "agent.seq"
    sequence = SequenceFile(path)
    assert [sequence.next() for _ in range(BLOCK)] == list(range(BLOCK))  # block 0..99 used up
    small_disk.fill()

    for _ in range(3):  # every try fails: none may use 100, which the file does not reserve
        with pytest.raises(SequenceError, match="No space left on device"):
            sequence.next()
    assert sequence.error is not None and "No space left" in sequence.error
    assert path.read_text() == f"{BLOCK}\n"
    assert not path.with_name(f"{path.name}.tmp").exists()  # the failed write gave its space back

    small_disk.free()
    assert sequence.next() == BLOCK
    assert sequence.error is None
    assert path.read_text() == f"{2 * BLOCK}\n"
    assert SequenceFile(path).next() == 2 * BLOCK  # a restart never repeats 100


def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "agent.seq"
    path.write_text("not a number\n")
    with pytest.raises(EdgeError, match=r"agent\.seq is unreadable or corrupt"):
        SequenceFile(path)
