"""What every MQTT connection of ours tracks about itself, whatever client drives it.

The edge agent and the cloud talk to the broker through paho
(`runtime.mqtt_link.MqttLink`), the gateway ingest through its own socket and
the mqtt5 codec (`gateway.broker_link`). Operators and tests see one
behaviour either way, so it lives here once:

- `LinkStatus`, the figures /metrics and the health checks read;
- reconnects that back off exponentially from ``reconnect_min_s`` to
  ``reconnect_max_s`` with jitter (`runtime.backoff`), reset by a CONNACK: a
  link never gives up, it is bounded in delay, not in attempts;
- flapping: a link that connects more than ``FLAPPING_CONNECTS`` times within
  ``FLAPPING_WINDOW_S`` is up but not healthy (a broker dropping us, e.g. for
  a malformed packet, or a client id taken over);
- the log lines ``broker_connected``, ``broker_lost``,
  ``broker_connect_failed`` and ``broker_disconnected``, with the broker and
  the account named, so a refused login says which one.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from typing import Final

import msgspec

from runtime.backoff import Backoff
from runtime.config_sections import LinkSettings
from runtime.logs import kv

log = logging.getLogger(__name__)

FLAPPING_WINDOW_S: Final = 60.0
FLAPPING_CONNECTS: Final = 5  # more connects than this within the window: flapping


class LinkStatus(msgspec.Struct, kw_only=True):
    connected: bool = False
    connects: int = 0
    connect_failures: int = 0
    last_error: str | None = None


class LinkState:
    """One connection's status, reconnect delay and flapping window; logs its changes."""

    def __init__(self, settings: LinkSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.status = LinkStatus()
        self._backoff = Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng=rng)
        self._recent_connects: deque[float] = deque(maxlen=FLAPPING_CONNECTS + 1)  # monotonic

    def next_delay(self) -> float:
        """How long to wait before the next connection attempt."""
        return self._backoff.next_delay()

    def connected(self, session_present: bool) -> None:
        """A successful CONNACK."""
        self._backoff.reset()
        self.status.connected = True
        self.status.connects += 1
        self._recent_connects.append(time.monotonic())
        log.info(
            "broker_connected",
            extra=kv(
                client_id=self.settings.client_id,
                host=self.settings.host,
                port=self.settings.port,
                session_present=session_present,
            ),
        )

    def lost(self, detail: str) -> None:
        """The broker or the network ended the connection (not we ourselves)."""
        if self.status.connected:
            self.down(detail)
        else:
            self.down(
                "the broker closed the connection before CONNACK (a refused TLS client"
                f" certificate or protocol; the broker's log has the reason): {detail}"
            )

    def down(self, error: str) -> None:
        """The connection is gone or never came up: the caller reconnects after a delay."""
        was_connected = self.status.connected
        self.status.connected = False
        self.status.last_error = error
        if not was_connected:
            self.status.connect_failures += 1
        log.warning(
            "broker_lost" if was_connected else "broker_connect_failed",
            extra=kv(
                client_id=self.settings.client_id,
                host=self.settings.host,
                port=self.settings.port,
                username=self.settings.username,  # a refused login: which account
                error=error,
            ),
        )

    def closed(self) -> None:
        """We disconnected on purpose: not a lost link."""
        self.status.connected = False
        log.info("broker_disconnected", extra=kv(client_id=self.settings.client_id))

    def flapping(self) -> str | None:
        """Why the link is unstable, if it connected too often lately; else None."""
        recent = self._recent_connects
        if len(recent) > FLAPPING_CONNECTS and time.monotonic() - recent[0] < FLAPPING_WINDOW_S:
            return (
                f"MQTT link flapping: {len(recent)} connects within {FLAPPING_WINDOW_S:.0f}s"
                f" (last error: {self.status.last_error})"
            )
        return None
