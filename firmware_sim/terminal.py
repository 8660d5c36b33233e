"""The POS terminal: payments, and the heartbeat that reports its health.

A terminal belongs to a site (merchant type, acquirer). Its state — battery,
paper roll, tamper switch, temperature, the payments stored while offline —
evolves with the payments it takes and the time between heartbeats, and
with the injections that hit it.

Like real firmware, it numbers each stream on its own (docs/wire.md: one
``seq`` counter per device and stream): payments 1, 2, 3... and heartbeats
1, 2, 3..., so neither stream shows a gap for the other's events.
"""

from __future__ import annotations

import random
from typing import Final

from firmware_sim import authorisation as auth
from firmware_sim.cards import CardPopulation
from firmware_sim.climate import ambient_c, overheat_c
from firmware_sim.degrading import outage_effect
from firmware_sim.fleet_layout import DeviceSpec
from firmware_sim.injections import InjectedPayment, InjectionPlan
from firmware_sim.merchants import Trade
from wire.incidents import InjectionType
from wire.messages import PaymentMethod, PaymentTransaction, TerminalStatus
from wire.timestamps import NS_PER_DAY, NS_PER_HOUR, NS_PER_S

CURRENCY: Final = "EUR"
CONTACTLESS_LIMIT_MINOR: Final = 5_000  # above it the card must be inserted
CARD_TESTING_DECLINE_RATE: Final = 0.85
SELF_HEATING_C: Final = 9.0
PAPER_PER_RECEIPT_PCT: Final = (0.15, 0.35)
PAPER_LOW_PCT: Final = 3.0
PAPER_REFILL_ODDS: Final = 0.3  # per heartbeat while low and open
CHARGE_PCT_PER_HOUR: Final = 25.0
DRAIN_PCT_PER_HOUR: Final = 7.0
DRAIN_PER_PAYMENT_PCT: Final = 0.02


class Terminal:
    def __init__(
        self,
        spec: DeviceSpec,
        cards: CardPopulation,
        plan: InjectionPlan,
        rng: random.Random,
        *,
        start_ns: int,
        trade: Trade,
    ) -> None:
        self.spec = spec
        self.payment_seq = 0  # the payment stream's counter: the last seq handed out
        self.status_seq = 0  # the status stream's counter
        self.offline_queue = 0  # payments authorised offline, not yet forwarded
        self._cards = cards
        self._plan = plan
        self._rng = rng
        self._trade = trade  # its site's merchant, as the scenario shapes it
        self._methods = [m for m, _ in spec.site.merchant.methods]
        self._method_weights = [w for _, w in spec.site.merchant.methods]
        self._battery = rng.uniform(70.0, 100.0)
        self._paper = rng.uniform(20.0, 100.0)
        self._booted_ns = start_ns - int(rng.uniform(0.1, 30.0) * NS_PER_DAY)
        self._last_ns = start_ns

    def next_payment_at(self, after_ns: int, horizon_ns: int) -> int | None:
        return self._trade.next_arrival(self._rng, after_ns, horizon_ns)

    def boot(self, ts_ns: int) -> None:
        """Powered on at ``ts_ns``: the uptime starts again."""
        self._booted_ns = ts_ns

    def payment(
        self, ts_ns: int, *, online: bool, injected: InjectedPayment | None = None
    ) -> PaymentTransaction:
        """Take one payment at ``ts_ns``: the shopper's, or an attack's if ``injected``."""
        rng = self._rng
        site = self.spec.site
        self.payment_seq += 1
        if injected is None:
            card = self._cards.draw(rng)
            amount = site.merchant.draw_amount(rng)
            method = rng.choices(self._methods, self._method_weights)[0]
        else:
            card, amount, method = injected.card_token, injected.amount_minor, injected.method
        if method is PaymentMethod.CONTACTLESS and amount > CONTACTLESS_LIMIT_MINOR:
            method = PaymentMethod.CHIP
        if online:
            code, latency = self._authorise_online(ts_ns, method, injected)
        else:
            code, latency = self._authorise_offline(amount)
            self.offline_queue += 1
        self._paper = max(0.0, self._paper - rng.uniform(*PAPER_PER_RECEIPT_PCT))
        if not self._charging(ts_ns):
            self._battery = max(0.0, self._battery - DRAIN_PER_PAYMENT_PCT)
        return PaymentTransaction(
            site=site.site_id,
            device=self.spec.device_id,
            ts=ts_ns,
            seq=self.payment_seq,
            txn_id=f"{self.spec.device_id}-t{self.payment_seq}",
            card_token=card,
            amount_minor=amount,
            currency=CURRENCY,
            method=method,
            acquirer=site.acquirer.acquirer_id,
            mcc=site.merchant.mcc,
            response_code=code,
            approved=code in (auth.APPROVED, auth.OFFLINE_APPROVED),
            auth_latency_ms=latency,
            offline=not online,
        )

    def _authorise_online(
        self, ts_ns: int, method: PaymentMethod, injected: InjectedPayment | None
    ) -> tuple[str, float]:
        rng = self._rng
        device = self.spec.device_id
        factor = 1.0
        decline_rate = auth.DECLINE_RATE[method]
        decline_codes: tuple[tuple[str, float], ...] = auth.DECLINE_CODES
        outage = self._plan.active(device, InjectionType.ACQUIRER_OUTAGE, ts_ns)
        spike = self._plan.active(device, InjectionType.DECLINE_SPIKE, ts_ns)
        if spike is not None:
            decline_rate = spike.strength
        if injected is not None and injected.kind is InjectionType.CARD_TESTING:
            decline_rate, decline_codes = CARD_TESTING_DECLINE_RATE, auth.CARD_TESTING_CODES
        failing = 0.0
        if outage is not None:
            slower, failing = outage_effect(outage, ts_ns)
            factor += slower
        latency = self.spec.site.acquirer.latency_ms(rng, factor)
        if outage is not None and rng.random() < failing:
            return auth.pick(rng, auth.OUTAGE_CODES), latency
        if rng.random() >= decline_rate:
            return auth.APPROVED, latency
        if decline_codes is auth.DECLINE_CODES:
            return auth.issuer_decline_code(rng, method), latency
        return auth.pick(rng, decline_codes), latency

    def _authorise_offline(self, amount: int) -> tuple[str, float]:
        """No network: the card and terminal decide (EMV offline), under a floor limit."""
        latency = round(self._rng.uniform(20.0, 80.0), 1)
        if amount <= auth.OFFLINE_FLOOR_LIMIT_MINOR:
            return auth.OFFLINE_APPROVED, latency
        return auth.OFFLINE_DECLINED, latency

    def forwarded(self, count: int) -> None:
        """``count`` stored payments went out once the terminal was back online."""
        self.offline_queue = max(0, self.offline_queue - count)

    def status(self, ts_ns: int) -> TerminalStatus:
        rng = self._rng
        device = self.spec.device_id
        plan = self._plan
        self._advance(ts_ns)
        self.status_seq += 1
        heat = overheat_c(plan.active(device, InjectionType.OVERHEATING, ts_ns), ts_ns)
        paper_out = plan.active(device, InjectionType.PAPER_OUT, ts_ns) is not None
        signal = round(self.spec.site.signal_dbm + rng.gauss(0.0, 3.0))
        return TerminalStatus(
            site=self.spec.site.site_id,
            device=device,
            ts=ts_ns,
            seq=self.status_seq,
            battery_pct=round(self._battery, 1),
            charging=self._charging(ts_ns),
            paper_pct=0.0 if paper_out else round(self._paper, 1),
            signal_dbm=max(-150, min(0, signal)),
            temperature_c=round(ambient_c(ts_ns) + SELF_HEATING_C + heat + rng.gauss(0, 0.4), 2),
            tamper=plan.active(device, InjectionType.TAMPER, ts_ns) is not None,
            firmware=self.spec.firmware,
            offline_queue=self.offline_queue,
            uptime_s=(ts_ns - self._booted_ns) // NS_PER_S,
        )

    def _charging(self, ts_ns: int) -> bool:
        """Counter-top terminals sit on their charger; portable ones leave it while open."""
        return not (self.spec.site.merchant.portable and self._trade.is_open(ts_ns))

    def _advance(self, ts_ns: int) -> None:
        """Battery over the time since the last heartbeat; a clerk changes a spent roll."""
        hours = max(0, ts_ns - self._last_ns) / NS_PER_HOUR
        self._last_ns = ts_ns
        rate = CHARGE_PCT_PER_HOUR if self._charging(ts_ns) else -DRAIN_PCT_PER_HOUR
        self._battery = min(100.0, max(0.0, self._battery + rate * hours))
        if (
            self._paper < PAPER_LOW_PCT
            and self._trade.is_open(ts_ns)
            and self._rng.random() < PAPER_REFILL_ODDS
        ):
            self._paper = 100.0
        if self._plan.active(self.spec.device_id, InjectionType.PAPER_OUT, ts_ns) is not None:
            self._paper = 0.0
