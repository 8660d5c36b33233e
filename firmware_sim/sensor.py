"""The environmental sensor next to the terminals: temperature, humidity, door, mains.

It sends one stream (sensor), numbered by its own counter (one per device and stream).
A ``sensor_fault`` injection bends its temperature (firmware_sim.sensor_faults).
"""

from __future__ import annotations

import random
from typing import Final

from firmware_sim.climate import ambient_c, humidity_pct, overheat_c
from firmware_sim.fleet_layout import DeviceSpec
from firmware_sim.injections import InjectionPlan
from firmware_sim.merchants import Trade
from firmware_sim.sensor_faults import SensorFaults
from wire.incidents import InjectionType
from wire.messages import SensorReading

DOOR_OPEN_WHILE_OPEN: Final = 0.08  # share of samples with the door open during opening hours
DOOR_OPEN_WHILE_CLOSED: Final = 0.004


class Sensor:
    def __init__(
        self, spec: DeviceSpec, plan: InjectionPlan, rng: random.Random, trade: Trade
    ) -> None:
        self.spec = spec
        self.sensor_seq = 0  # the sensor stream's counter: the last seq handed out
        self._plan = plan
        self._rng = rng
        self._trade = trade  # its site's merchant, as the scenario shapes it
        self._faults = SensorFaults()

    def reading(self, ts_ns: int) -> SensorReading:
        rng = self._rng
        device = self.spec.device_id
        self.sensor_seq += 1
        heat = overheat_c(self._plan.active(device, InjectionType.OVERHEATING, ts_ns), ts_ns)
        door_odds = DOOR_OPEN_WHILE_OPEN if self._trade.is_open(ts_ns) else DOOR_OPEN_WHILE_CLOSED
        temperature = round(ambient_c(ts_ns) + heat + rng.gauss(0.0, 0.3), 2)
        fault = self._plan.active(device, InjectionType.SENSOR_FAULT, ts_ns)
        return SensorReading(
            site=self.spec.site.site_id,
            device=device,
            ts=ts_ns,
            seq=self.sensor_seq,
            temperature_c=self._faults.temperature(fault, ts_ns, temperature),
            humidity_pct=round(min(100.0, max(0.0, humidity_pct(ts_ns) + rng.gauss(0, 1.5))), 1),
            door_open=rng.random() < door_odds,
            mains_power=True,
        )
