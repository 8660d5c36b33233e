from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dedup import Deduplicator


def test_a_redelivery_is_a_duplicate_and_counted() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", 1, 100)
    assert dedup.is_duplicate("s", "d", 1, 100)
    assert dedup.is_duplicate("s", "d", 1, 100)
    assert dedup.stats().duplicates == 2


def test_identity_is_site_device_and_seq() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", 1, 100)
    assert not dedup.is_duplicate("s", "d", 2, 100)
    assert not dedup.is_duplicate("s", "e", 1, 100)
    assert not dedup.is_duplicate("t", "d", 1, 100)
    assert dedup.stats().entries == 4


def test_a_reused_seq_with_another_ts_is_a_new_event() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", 1, 100)
    assert not dedup.is_duplicate("s", "d", 1, 999)  # the device's counter restarted
    assert dedup.is_duplicate("s", "d", 1, 999)
    stats = dedup.stats()
    assert (stats.reused, stats.duplicates, stats.entries) == (1, 1, 1)


def test_the_first_seen_is_forgotten_first_when_full() -> None:
    dedup = Deduplicator(3)
    for seq in range(4):
        dedup.is_duplicate("s", "d", seq, seq)
    assert dedup.stats().evicted == 1
    assert dedup.is_duplicate("s", "d", 3, 3)  # still remembered
    assert not dedup.is_duplicate("s", "d", 0, 0)  # forgotten: taken as new
    assert dedup.stats().entries == 3


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Deduplicator(0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 20), st.integers(0, 1)), max_size=200
    ),
    st.integers(min_value=1, max_value=15),
)
def test_matches_a_fifo_model_and_stays_bounded(
    events: list[tuple[str, int, int]], max_entries: int
) -> None:
    dedup = Deduplicator(max_entries)
    model: OrderedDict[tuple[str, str, int], int] = OrderedDict()
    for device, seq, ts in events:
        key = ("s", device, seq)
        expected = model.get(key) == ts
        if key not in model and len(model) >= max_entries:
            model.popitem(last=False)
        if not expected:
            model[key] = ts  # a reused key keeps its place in the FIFO order
        assert dedup.is_duplicate("s", device, seq, ts) == expected
        assert dedup.stats().entries == len(model) <= max_entries
