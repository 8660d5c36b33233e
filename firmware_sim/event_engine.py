"""The discrete-event engine: one heap of next-event times over the whole fleet.

Each device has its own next payment, heartbeat or sample time in the heap;
attacks add payments at planned times; offline windows cut a device off and
bring it back. Popping the heap yields the fleet's events in simulated-time
order, so a simulated day costs work per event, not per device per tick.

While a device is cut off it authorises payments offline and stores them
(store-and-forward, counted in the terminal's ``offline_queue``); they are
handed over, with their original ``ts``, when it is back. Heartbeats and
samples are not produced while cut off.

The scenario's context (firmware_sim.context) adds harmless Wi-Fi flaps (short
offline windows) and power cycles: a terminal shut down cleanly (``shutdown``)
is off like a cut-off one; powered on it connects (``online``), boots (its
uptime starts again) and sends its first heartbeat a few seconds later, its
heartbeats keeping that phase from then on.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple

import msgspec

from firmware_sim.cards import CardPopulation
from firmware_sim.context import Context, PowerCycle
from firmware_sim.fleet_layout import DeviceKind, Fleet
from firmware_sim.injections import InjectionPlan
from firmware_sim.sensor import Sensor
from firmware_sim.terminal import Terminal
from wire.incidents import InjectionType
from wire.messages import (
    DeviceState,
    PaymentTransaction,
    SensorReading,
    StateReason,
    TerminalStatus,
)
from wire.timestamps import NS_PER_S

_PAYMENT: Final = 0
_STATUS: Final = 1
_SENSOR: Final = 2
_INJECTED: Final = 3
_OFFLINE: Final = 4
_ONLINE: Final = 5
_POWER_OFF: Final = 6
_POWER_ON: Final = 7


SimMessage = PaymentTransaction | TerminalStatus | SensorReading
"""What a simulated device sends (its connection state is the agent's and broker's)."""


class Emission(NamedTuple):
    """A message a device hands over at simulated time ``at_ns``."""

    at_ns: int
    message: SimMessage
    duplicate: bool = False  # the same message (same stream and seq) sent once more
    corrupt: bool = False  # its frame / payload is damaged on the way


class LinkChange(NamedTuple):
    """A device connected, vanished (the broker publishes its last will) or shut down."""

    at_ns: int
    site: str
    device: str
    reason: StateReason

    @property
    def online(self) -> bool:
        return self.reason is StateReason.CONNECTED

    def state(self) -> DeviceState:
        """The retained state message this change puts on the device's state topic."""
        return DeviceState(
            site=self.site,
            device=self.device,
            ts=self.at_ns,
            online=self.online,
            reason=self.reason,
        )


SimEvent = Emission | LinkChange


@dataclass(frozen=True, slots=True)
class Timing:
    start_ns: int
    end_ns: int
    status_every_ns: int = 60 * NS_PER_S
    sensor_every_ns: int = 60 * NS_PER_S


class Engine:
    def __init__(
        self,
        fleet: Fleet,
        plan: InjectionPlan,
        cards: CardPopulation,
        timing: Timing,
        context: Context,
    ) -> None:
        self.fleet = fleet
        self.plan = plan
        self.timing = timing
        self.context = context
        self._terminals: dict[int, Terminal] = {}
        self._sensors: dict[int, Sensor] = {}
        for index, spec in enumerate(fleet.devices):
            rng = random.Random(f"{fleet.seed}:device:{spec.device_id}")
            trade = context.trade(spec.site)
            if spec.kind is DeviceKind.TERMINAL:
                self._terminals[index] = Terminal(
                    spec, cards, plan, rng, start_ns=timing.start_ns, trade=trade
                )
            else:
                self._sensors[index] = Sensor(spec, plan, rng, trade)
        self._index = {spec.device_id: i for i, spec in enumerate(fleet.devices)}
        self._link_rng = random.Random(f"{fleet.seed}:link")
        # (time, tiebreak, action, device index, injected payment index or -1)
        self._heap: list[tuple[int, int, int, int, int]] = []
        self._tiebreak = 0
        self._cut_off: dict[int, int] = {}  # device -> number of open offline windows
        self._held: dict[int, list[PaymentTransaction]] = {}
        self._off: set[int] = set()  # terminals shut down (a power cycle)
        # a terminal's heartbeat chain: a power-on starts a new one, the old one lapses
        self._chain: dict[int, int] = {}
        self._started = False

    def events(self) -> Iterator[SimEvent]:
        """Every event of the run, in simulated-time order (an engine runs once)."""
        if self._started:
            raise RuntimeError("this engine has run already: build a new simulation")
        self._started = True
        start, end = self.timing.start_ns, self.timing.end_ns
        for spec in self.fleet.devices:
            yield LinkChange(start, spec.site.site_id, spec.device_id, StateReason.CONNECTED)
        self._schedule_first()
        heap = self._heap
        while heap:
            t, _, action, index, payment = heapq.heappop(heap)
            if t < end or action == _ONLINE:
                yield from self._act(t, action, index, payment)
        for index, spec in enumerate(self.fleet.devices):
            if index not in self._off:
                yield LinkChange(end, spec.site.site_id, spec.device_id, StateReason.SHUTDOWN)

    def _act(self, t: int, action: int, index: int, payment: int) -> Iterator[SimEvent]:
        if action == _PAYMENT:
            yield from self._payment(t, index)
        elif action in (_STATUS, _SENSOR):
            yield from self._sample(t, index, action, payment)
        elif action == _INJECTED:
            yield from self._injected(t, index, payment)
        elif action == _OFFLINE:
            yield from self._go_offline(t, index)
        elif action == _POWER_OFF:
            self._off.add(index)
            yield from self._go_offline(t, index, StateReason.SHUTDOWN)
        elif action == _POWER_ON:
            yield from self._power_on(t, index, self.context.power[payment])
        else:
            yield from self._go_online(t, index)

    def _push(self, ts_ns: int, action: int, index: int, payment: int = -1) -> None:
        self._tiebreak += 1
        heapq.heappush(self._heap, (ts_ns, self._tiebreak, action, index, payment))

    def _schedule_first(self) -> None:
        timing = self.timing
        for index, terminal in self._terminals.items():
            offset = int(_phase(index, self.fleet.seed) * timing.status_every_ns)
            self._push(timing.start_ns + offset, _STATUS, index, 0)
            first = terminal.next_payment_at(timing.start_ns, timing.end_ns)
            if first is not None:
                self._push(first, _PAYMENT, index)
        for index in self._sensors:
            offset = int(_phase(index, self.fleet.seed) * timing.sensor_every_ns)
            self._push(timing.start_ns + offset, _SENSOR, index)
        for number, payment in enumerate(self.plan.payments):
            self._push(payment.ts_ns, _INJECTED, self._index[payment.device], number)
        for window in (*self.plan.offline, *self.context.flaps):
            self._push(window.start_ns, _OFFLINE, self._index[window.device])
            self._push(window.end_ns, _ONLINE, self._index[window.device])
        for number, cycle in enumerate(self.context.power):
            self._push(cycle.off_ns, _POWER_OFF, self._index[cycle.device])
            if cycle.on_ns < timing.end_ns:
                self._push(cycle.on_ns, _POWER_ON, self._index[cycle.device], number)

    def _payment(self, t: int, index: int) -> Iterator[Emission]:
        terminal = self._terminals[index]
        following = terminal.next_payment_at(t, self.timing.end_ns)
        if following is not None:
            self._push(following, _PAYMENT, index)
        yield from self._take(t, index, terminal.payment(t, online=index not in self._cut_off))

    def _injected(self, t: int, index: int, payment: int) -> Iterator[Emission]:
        injected = self.plan.payments[payment]
        terminal = self._terminals[index]
        message = terminal.payment(t, online=index not in self._cut_off, injected=injected)
        yield from self._take(t, index, message)

    def _take(self, t: int, index: int, message: PaymentTransaction) -> Iterator[Emission]:
        if index in self._cut_off:
            self._held.setdefault(index, []).append(message)
        else:
            yield from self._emit(t, index, message)

    def _sample(self, t: int, index: int, action: int, chain: int) -> Iterator[Emission]:
        if action == _STATUS:
            if chain != self._chain.get(index, 0):
                return  # a heartbeat of the terminal's life before its power-on
            self._push(t + self.timing.status_every_ns, _STATUS, index, chain)
            if index not in self._cut_off:
                yield from self._emit(t, index, self._terminals[index].status(t))
        else:
            self._push(t + self.timing.sensor_every_ns, _SENSOR, index)
            if index not in self._cut_off:
                yield from self._emit(t, index, self._sensors[index].reading(t))

    def _go_offline(
        self, t: int, index: int, reason: StateReason = StateReason.LAST_WILL
    ) -> Iterator[LinkChange]:
        depth = self._cut_off.get(index, 0)
        self._cut_off[index] = depth + 1
        if depth == 0:
            spec = self.fleet.devices[index]
            yield LinkChange(t, spec.site.site_id, spec.device_id, reason)

    def _power_on(self, t: int, index: int, cycle: PowerCycle) -> Iterator[SimEvent]:
        """Connect, boot, and send the first heartbeat a few seconds after ``online``."""
        self._off.discard(index)
        yield from self._go_online(t, index)
        if index not in self._cut_off:
            self._terminals[index].boot(t)
            chain = self._chain[index] = self._chain.get(index, 0) + 1
            self._push(cycle.first_heartbeat_ns, _STATUS, index, chain)

    def _go_online(self, t: int, index: int) -> Iterator[SimEvent]:
        depth = self._cut_off.pop(index) - 1
        if depth > 0:
            self._cut_off[index] = depth
            return
        spec = self.fleet.devices[index]
        yield LinkChange(t, spec.site.site_id, spec.device_id, StateReason.CONNECTED)
        held = self._held.pop(index, [])
        for message in held:
            yield from self._emit(t, index, message)
        if held:
            self._terminals[index].forwarded(len(held))

    def _emit(self, t: int, index: int, message: SimMessage) -> Iterator[Emission]:
        """Hand ``message`` over, with the device's clock skew, duplicates and corruption."""
        plan = self.plan
        device = message.device
        skew = plan.active(device, InjectionType.CLOCK_SKEW, t)
        if skew is not None:
            message = msgspec.structs.replace(
                message, ts=max(0, message.ts + int(skew.strength * NS_PER_S))
            )
        corrupt = plan.active(device, InjectionType.CORRUPT_FRAMES, t)
        damaged = corrupt is not None and self._link_rng.random() < corrupt.strength
        yield Emission(t, message, corrupt=damaged)
        duplicate = plan.active(device, InjectionType.DUPLICATE_SENDS, t)
        if duplicate is not None and self._link_rng.random() < duplicate.strength:
            yield Emission(t, message, duplicate=True)


def _phase(index: int, seed: int) -> float:
    """Where in its interval a device's first heartbeat falls (spreads the fleet out)."""
    return random.Random(f"{seed}:phase:{index}").random()
