from hypothesis import given
from hypothesis import strategies as st

from gateway.gaps import DeviceGaps, GapDetector, GapStats


def feed(seqs: list[int], *, window: int = 100, device: str = "pos-1") -> GapStats:
    detector = GapDetector(window, max_devices=10)
    for seq in seqs:
        detector.observe("store-1", device, "payment", seq)
    return detector.stats()


def test_consecutive_seqs_have_no_gaps() -> None:
    stats = feed(list(range(1000, 1100)))
    assert (stats.missing, stats.outstanding, stats.devices, stats.top) == (0, 0, 1, [])


def test_missing_seqs_are_counted_and_filled_when_they_arrive_late() -> None:
    stats = feed([1, 2, 6, 7, 4, 3])
    assert (stats.missing, stats.filled, stats.outstanding, stats.expired) == (3, 2, 1, 0)
    assert stats.top == [DeviceGaps("store-1", "pos-1", "payment", missing=3, filled=2, resets=0)]


def test_missing_seqs_expire_once_the_window_passed_them() -> None:
    stats = feed([1, 3, *range(4, 15), 2], window=10)
    assert (stats.missing, stats.filled, stats.expired, stats.outstanding) == (1, 0, 1, 0)
    assert stats.stale == 1  # seq 2 arrived after its slot expired


def test_a_jump_longer_than_the_window_remembers_only_the_window() -> None:
    stats = feed([0, 1_000_000], window=100)
    assert (stats.missing, stats.expired, stats.outstanding) == (999_999, 999_899, 100)


def test_a_restarted_counter_is_a_reset_not_a_gap() -> None:
    stats = feed([*range(50_000, 50_010), 0, 1, 2, 3], window=100)
    assert (stats.resets, stats.missing, stats.stale) == (1, 0, 0)
    assert stats.top[0].resets == 1


def test_a_reset_expires_what_the_old_counter_still_missed() -> None:
    stats = feed([50_000, 50_003, 0, 1], window=100)
    assert (stats.resets, stats.missing, stats.expired, stats.outstanding) == (1, 2, 2, 0)


def test_a_single_very_late_event_is_stale_not_a_reset() -> None:
    stats = feed([*range(50_000, 50_010), 10, 50_010, 50_011], window=100)
    assert (stats.resets, stats.stale, stats.missing) == (0, 1, 0)


def test_a_seq_seen_before_is_repeated_not_filled() -> None:
    stats = feed([1, 2, 3, 2], window=100)
    assert (stats.repeated, stats.filled, stats.missing) == (1, 0, 0)


def test_devices_are_tracked_apart_and_the_worst_come_first() -> None:
    detector = GapDetector(100, max_devices=10)
    for device, seqs in {"a": [1, 5], "b": [1, 2], "c": [1, 3]}.items():
        for seq in seqs:
            detector.observe("s", device, "payment", seq)
    stats = detector.stats(top=2)
    assert [d.device for d in stats.top] == ["a", "c"]
    assert stats.missing == 4


def test_devices_beyond_the_bound_evict_the_first_seen() -> None:
    detector = GapDetector(100, max_devices=2)
    detector.observe("s", "a", "payment", 1)
    detector.observe("s", "a", "payment", 5)  # 3 outstanding
    detector.observe("s", "b", "payment", 1)
    detector.observe("s", "c", "payment", 1)  # evicts a
    stats = detector.stats()
    assert (stats.devices, stats.evicted_devices, stats.outstanding, stats.expired) == (2, 1, 0, 3)
    assert stats.top == []
    detector.observe("s", "a", "payment", 100)  # comes back: starts afresh, no gap
    assert detector.stats().missing == 3


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(["payment", "status"]),
            st.integers(min_value=0, max_value=500),
        ),
        max_size=300,
    ),
    st.integers(min_value=1, max_value=50),
)
def test_counts_always_balance_and_memory_stays_in_the_window(
    events: list[tuple[str, str, int]], window: int
) -> None:
    detector = GapDetector(window, max_devices=3)
    for device, stream, seq in events:
        detector.observe("s", device, stream, seq)
        stats = detector.stats(top=10)
        assert stats.missing == stats.filled + stats.expired + stats.outstanding
        assert 0 <= stats.outstanding <= window * stats.devices
        assert stats.devices <= 3
        # the top list holds what the tracked streams hold: never more than ever counted
        assert sum(d.missing for d in stats.top) <= stats.missing
        assert sum(d.filled for d in stats.top) <= stats.filled
        assert all(d.missing >= 0 and d.filled >= 0 and d.resets >= 0 for d in stats.top)


# -- one counter per (device, stream) ---------------------------------------------------------


def test_each_stream_of_a_device_has_its_own_counter() -> None:
    """A terminal numbers payments and heartbeats apart: 1, 2, 3 on each is no gap."""
    detector = GapDetector(100, max_devices=10)
    for seq in range(1, 51):
        detector.observe("store-1", "pos-1", "payment", seq)
        if seq % 5 == 0:
            detector.observe("store-1", "pos-1", "status", seq // 5)
    stats = detector.stats()
    assert (stats.missing, stats.repeated, stats.stale, stats.resets) == (0, 0, 0, 0)
    assert stats.devices == 2  # (store-1, pos-1, payment) and (store-1, pos-1, status)


def test_an_agent_sharing_its_terminals_id_shows_no_false_gaps() -> None:
    """The defect: the agent's HostHealth counter and its terminal's counters under one
    (site, device). Keyed by (site, device) alone, health 0, 1, 2... interleaved with
    payments 1, 2, 3... looked like jumps, repeats and restarts."""
    detector = GapDetector(100, max_devices=10)
    payment = 1000  # a terminal that has sold for a while; the agent just started
    for health in range(30):
        for _ in range(3):
            detector.observe("s0001", "s0001-pos1", "payment", payment)
            payment += 1
        detector.observe("s0001", "s0001-pos1", "health", health)
    stats = detector.stats()
    assert (stats.missing, stats.repeated, stats.stale, stats.resets) == (0, 0, 0, 0)
    assert stats.top == []


def test_a_gap_in_one_stream_is_counted_once_and_the_top_names_the_stream() -> None:
    detector = GapDetector(100, max_devices=10)
    for stream, seqs in {"payment": [1, 2, 5], "status": [1, 3], "sensor": [1, 2]}.items():
        for seq in seqs:
            detector.observe("s", "pos-1", stream, seq)
    for seq in (1, 3):
        detector.observe("s", "pos-2", "payment", seq)
    detector.observe("s", "pos-1", "payment", 4)  # late: fills the payment gap, not status'
    stats = detector.stats()
    assert (stats.missing, stats.filled, stats.outstanding) == (4, 1, 3)
    assert stats.top == [
        DeviceGaps("s", "pos-1", "payment", missing=2, filled=1, resets=0),
        DeviceGaps("s", "pos-1", "status", missing=1, filled=0, resets=0),
        DeviceGaps("s", "pos-2", "payment", missing=1, filled=0, resets=0),
    ]


def test_the_bound_counts_streams_and_an_evicted_stream_leaves_the_top() -> None:
    detector = GapDetector(100, max_devices=2)
    detector.observe("s", "a", "payment", 1)
    detector.observe("s", "a", "payment", 4)  # 2 missing
    detector.observe("s", "a", "status", 1)
    detector.observe("s", "a", "status", 3)  # 1 missing
    assert detector.stats().top == [
        DeviceGaps("s", "a", "payment", missing=2, filled=0, resets=0),
        DeviceGaps("s", "a", "status", missing=1, filled=0, resets=0),
    ]
    detector.observe("s", "b", "payment", 1)  # a third key: evicts (s, a, payment)
    stats = detector.stats()
    assert (stats.devices, stats.evicted_devices) == (2, 1)
    assert stats.top == [DeviceGaps("s", "a", "status", missing=1, filled=0, resets=0)]
    detector.observe("s", "c", "payment", 1)  # evicts (s, a, status): a is gone
    assert detector.stats().top == []


def test_a_restart_of_one_stream_is_a_reset_of_that_stream_only() -> None:
    detector = GapDetector(100, max_devices=10)
    for seq in range(50_000, 50_010):
        detector.observe("s", "pos-1", "payment", seq)
        detector.observe("s", "pos-1", "status", seq - 40_000)
    for seq in (0, 1, 2):  # the payment counter was lost; the status one was not
        detector.observe("s", "pos-1", "payment", seq)
        detector.observe("s", "pos-1", "status", 10_010 + seq)
    stats = detector.stats()
    assert (stats.resets, stats.missing, stats.stale) == (1, 0, 0)
    assert stats.top == [DeviceGaps("s", "pos-1", "payment", missing=0, filled=0, resets=1)]
