import random

from runtime.backoff import Backoff


def test_delays_double_within_jitter_up_to_the_cap_and_reset() -> None:
    backoff = Backoff(1.0, 8.0, rng=random.Random(3))
    steps = [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    for step in steps:
        assert step / 2 <= backoff.next_delay() <= step
    assert backoff.attempt == len(steps)
    backoff.reset()
    assert backoff.attempt == 0 and backoff.next_delay() <= 1.0


def test_retry_after_wins_but_is_capped() -> None:
    backoff = Backoff(1.0, 8.0, retry_after_max_s=60.0, rng=random.Random(3))
    assert 30.0 <= backoff.next_delay(retry_after_s=30.0) <= 33.0
    assert 60.0 <= backoff.next_delay(retry_after_s=3600.0) <= 66.0
