"""Capped exponential backoff with jitter, for every retry loop of ours.

Each delay is drawn from the upper half of the current step (so retries of
many clients spread out, yet never come sooner than half the step); steps
double from ``initial_s`` to ``max_s``. A server's Retry-After wins, capped at
``retry_after_max_s`` and jittered by up to 10%. Loops using it are bounded in
delay, not in attempts: the components never give up on a broker or a
database, they keep trying and say so in their logs and counters.
"""

from __future__ import annotations

import random


class Backoff:
    def __init__(
        self,
        initial_s: float,
        max_s: float,
        retry_after_max_s: float = 300.0,
        rng: random.Random | None = None,
    ) -> None:
        self._initial = initial_s
        self._max = max_s
        self._retry_after_max = retry_after_max_s
        self._rng = rng or random.Random()
        self._attempt = 0

    @property
    def attempt(self) -> int:
        """Delays handed out since the last `reset` (0: the first try)."""
        return self._attempt

    def next_delay(self, retry_after_s: float | None = None) -> float:
        self._attempt += 1
        if retry_after_s is not None:
            return min(retry_after_s, self._retry_after_max) * self._rng.uniform(1.0, 1.1)
        ceiling = min(self._max, self._initial * 2.0 ** min(self._attempt - 1, 30))
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        self._attempt = 0
