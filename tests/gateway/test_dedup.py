from collections import OrderedDict

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.dedup import Deduplicator


def test_a_redelivery_is_a_duplicate_and_counted() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", "payment", 1, 100)
    assert dedup.is_duplicate("s", "d", "payment", 1, 100)
    assert dedup.is_duplicate("s", "d", "payment", 1, 100)
    assert dedup.stats().duplicates == 2


def test_identity_is_site_device_stream_and_seq() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", "payment", 1, 100)
    assert not dedup.is_duplicate("s", "d", "payment", 2, 100)
    assert not dedup.is_duplicate("s", "e", "payment", 1, 100)
    assert not dedup.is_duplicate("t", "d", "payment", 1, 100)
    assert not dedup.is_duplicate("s", "d", "status", 1, 100)  # same seq and ts, other stream
    assert not dedup.is_duplicate("s", "d", "health", 1, 100)
    assert dedup.stats().entries == 6
    assert (dedup.stats().duplicates, dedup.stats().reused) == (0, 0)


def test_an_agent_sharing_its_terminals_id_neither_hides_nor_overwrites_an_event() -> None:
    """The defect: keyed by (site, device, seq), the agent's health 7 overwrote the
    remembered payment 7 of the terminal that shares its id (counted as a restarted
    counter), so the payment's redelivery was no longer recognised."""
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s0001", "s0001-pos1", "payment", 7, 100)
    assert not dedup.is_duplicate("s0001", "s0001-pos1", "health", 7, 200)
    assert dedup.is_duplicate("s0001", "s0001-pos1", "payment", 7, 100)  # the redelivery
    assert dedup.is_duplicate("s0001", "s0001-pos1", "health", 7, 200)
    stats = dedup.stats()
    assert (stats.entries, stats.duplicates, stats.reused) == (2, 2, 0)


def test_a_reused_seq_with_another_ts_is_a_new_event() -> None:
    dedup = Deduplicator(10)
    assert not dedup.is_duplicate("s", "d", "payment", 1, 100)
    assert not dedup.is_duplicate("s", "d", "payment", 1, 999)  # the device's counter restarted
    assert dedup.is_duplicate("s", "d", "payment", 1, 999)
    stats = dedup.stats()
    assert (stats.reused, stats.duplicates, stats.entries) == (1, 1, 1)


def test_the_first_seen_is_forgotten_first_when_full() -> None:
    dedup = Deduplicator(3)
    for seq in range(4):
        dedup.is_duplicate("s", "d", "payment", seq, seq)
    assert dedup.stats().evicted == 1
    assert dedup.is_duplicate("s", "d", "payment", 3, 3)  # still remembered
    assert not dedup.is_duplicate("s", "d", "payment", 0, 0)  # forgotten: taken as new
    assert dedup.stats().entries == 3


def test_a_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        Deduplicator(0)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(["payment", "status"]),
            st.integers(0, 20),
            st.integers(0, 1),
        ),
        max_size=200,
    ),
    st.integers(min_value=1, max_value=15),
)
def test_matches_a_fifo_model_and_stays_bounded(
    events: list[tuple[str, str, int, int]], max_entries: int
) -> None:
    dedup = Deduplicator(max_entries)
    model: OrderedDict[tuple[str, str, str, int], int] = OrderedDict()
    for device, stream, seq, ts in events:
        key = ("s", device, stream, seq)
        expected = model.get(key) == ts
        if key not in model and len(model) >= max_entries:
            model.popitem(last=False)
        if not expected:
            model[key] = ts  # a reused key keeps its place in the FIFO order
        assert dedup.is_duplicate("s", device, stream, seq, ts) == expected
        assert dedup.stats().entries == len(model) <= max_entries
