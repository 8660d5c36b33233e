"""What an acquirer outage does to one authorisation: how much slower, how likely to fail.

An outage without a ramp hits at once: latency x(1 + 30 i), a share i of the
authorisations fail with 91/96 (i: its intensity). A degrading acquirer (an
outage with ``ramp``) creeps: its latency rises from x1 to x5 over the ramp,
then, latency held at x5, the share failing rises from 5 % to i (0.4 by
default) by the window's end.
"""

from __future__ import annotations

from typing import Final

from firmware_sim.injections import Injection

OUTAGE_LATENCY_FACTOR: Final = 30.0  # at full intensity, the latency is x31
DEGRADED_LATENCY_FACTOR: Final = 5.0  # a degrading acquirer's latency by the ramp's end
DEGRADING_FIRST_FAILING: Final = 0.05  # the share failing as the ramp ends


def outage_effect(outage: Injection, ts_ns: int) -> tuple[float, float]:
    """(latency factor minus 1, share of authorisations failing) at ``ts_ns``."""
    if outage.ramp_ns <= 0:
        return OUTAGE_LATENCY_FACTOR * outage.strength, outage.strength
    ramp_end = outage.start_ns + outage.ramp_ns
    if ts_ns < ramp_end:
        progress = (ts_ns - outage.start_ns) / outage.ramp_ns
        return (DEGRADED_LATENCY_FACTOR - 1.0) * progress, 0.0
    progress = (ts_ns - ramp_end) / max(outage.end_ns - ramp_end, 1)
    failing = DEGRADING_FIRST_FAILING + (outage.strength - DEGRADING_FIRST_FAILING) * progress
    return DEGRADED_LATENCY_FACTOR - 1.0, failing
