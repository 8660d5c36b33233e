"""A sensor whose reading goes wrong (``sensor_fault``): stuck, drifting or jumping.

The fault bends the temperature a sensor reports, not the room's: ``stuck``
holds the value of the first reading in the window, ``drift`` adds an offset
growing linearly to ``intensity`` degrees by the window's end, ``jump`` adds
``intensity`` degrees for the whole window.
"""

from __future__ import annotations

from firmware_sim.injections import Injection
from firmware_sim.scenario_file import SensorFaultMode


class SensorFaults:
    """One sensor's memory of its faults (the value a stuck reading holds)."""

    def __init__(self) -> None:
        self._stuck: tuple[Injection, float] | None = None

    def temperature(self, fault: Injection | None, ts_ns: int, true_c: float) -> float:
        """What the sensor reports when the room is at ``true_c``."""
        if fault is None:
            return true_c
        if fault.mode is SensorFaultMode.STUCK:
            if self._stuck is None or self._stuck[0] is not fault:
                self._stuck = (fault, true_c)
            return self._stuck[1]
        if fault.mode is SensorFaultMode.DRIFT:
            progress = (ts_ns - fault.start_ns) / max(fault.end_ns - fault.start_ns, 1)
            return round(true_c + fault.strength * progress, 2)
        return round(true_c + fault.strength, 2)
