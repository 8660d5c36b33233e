from pathlib import Path

import pytest

from runtime.deadletters import DeadLetters
from tests.conftest import SmallDisk


def test_kept_payloads_read_back_with_their_reason(tmp_path: Path) -> None:
    store = DeadLetters(tmp_path / "dl")
    store.keep(b'{"schema": "nope"}', reason="unknown schema", source="/dev/ttyUSB0")
    store.keep(b"\xff\x00\xfe", reason="not JSON", source="/dev/ttyUSB0")
    records = store.read_all()
    assert [(r.reason, r.payload, r.payload_encoding) for r in records] == [
        ("unknown schema", '{"schema": "nope"}', "utf-8"),
        ("not JSON", "/wD+", "base64"),
    ]
    assert store.kept == 2 and store.evicted == 0


def test_store_is_bounded_and_counts_what_it_evicts(tmp_path: Path) -> None:
    store = DeadLetters(tmp_path / "dl", max_bytes=64 * 1024, segments=4)
    for i in range(2_000):
        store.keep(b"x" * 100 + str(i).encode(), reason="too long", source="t")
    on_disk = sum(p.stat().st_size for p in (tmp_path / "dl").iterdir())
    assert on_disk <= 64 * 1024 + 4096
    remaining = store.read_all()
    assert store.evicted > 0
    assert len(remaining) + store.evicted == 2_000
    assert remaining[-1].payload.endswith("1999")  # the newest are the ones kept


def test_reopened_store_appends_after_the_last_segment(tmp_path: Path) -> None:
    store = DeadLetters(tmp_path / "dl", max_bytes=16 * 1024, segments=2)
    for _ in range(100):
        store.keep(b"y" * 200, reason="r", source="s")
    store.close()
    again = DeadLetters(tmp_path / "dl", max_bytes=16 * 1024, segments=2)
    again.keep(b"last", reason="r", source="s")
    assert again.read_all()[-1].payload == "last"


def test_needs_two_segments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="2 segments"):
        DeadLetters(tmp_path, segments=1)


def disk_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir())


@pytest.mark.parametrize(
    "payload",
    [b"x" * (1 << 20), b"\x01" * (1 << 20), bytes(range(256)) * 4096, "é".encode() * 400_000],
    ids=["ascii", "escaped", "binary", "multibyte"],
)
def test_the_byte_limit_is_exact_even_for_records_larger_than_it(
    tmp_path: Path, payload: bytes
) -> None:
    store = DeadLetters(tmp_path / "dl", max_bytes=1 << 20, segments=8)
    for i in range(20):
        store.keep(payload, reason=f"too big {i}", source="t")
        assert disk_bytes(tmp_path / "dl") <= 1 << 20
    records = store.read_all()
    assert records[-1].reason == "too big 19"
    assert all(r.truncated and r.size == len(payload) for r in records)
    assert disk_bytes(tmp_path / "dl") > (1 << 20) * 3 // 4  # heads, not stubs, were kept
    assert len(records) + store.evicted == 20


def test_a_full_disk_is_counted_not_raised_and_writing_resumes(small_disk: SmallDisk) -> None:
    small_disk.fill()
    store = DeadLetters(small_disk.path / "dl", max_bytes=64 << 10)  # opening writes nothing
    for _ in range(3):
        store.keep(b"y" * 5000, reason="bad", source="s")
    assert (store.kept, store.write_errors, store.lost) == (0, 3, 3)
    assert store.last_error is not None and "No space" in store.last_error
    small_disk.free()
    store.keep(b"after", reason="bad", source="s")
    assert (store.kept, store.last_error) == (1, None)
    assert [r.payload for r in store.read_all()] == ["after"]  # no half record
    store.close()


def test_a_card_number_is_never_written(tmp_path: Path) -> None:
    store = DeadLetters(tmp_path / "dl")
    store.keep(b'{"txn_id": "4111 1111 1111 1111"}', reason="bad", source="s")
    store.keep(b"{}", reason="unknown key 5555555555554444", source="s")
    store.keep(b"{}", reason="bad", source="tp/v1/dev/s/4111111111111111/payment")
    store.keep(b"{}", reason="clean", source="s")
    assert (store.refused_pan, store.kept) == (3, 1)
    on_disk = b"".join(path.read_bytes() for path in (tmp_path / "dl").iterdir())
    assert b"4111" not in on_disk and b"5555" not in on_disk
