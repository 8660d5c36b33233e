from pathlib import Path

import pytest

from tillpulse.deadletters import DeadLetters


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
