"""The edge agent: serial sources and host health -> outbox -> MQTT publisher.

Threads: one per serial port (`SerialSource`), one sampling host health, one
running the MQTT publisher; the main thread supervises. It writes the status
file that ``tillpulse edge status`` reads, pings the systemd watchdog only
while every worker thread is alive (a dead thread means systemd restarts the
agent, and the outbox makes that lossless), and on SIGTERM/SIGINT stops the
workers, says "offline" on MQTT and closes the outbox.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from edge import host_health, systemd
from edge.config import PASSWORD_ENV, EdgeConfig
from edge.errors import OutboxError
from edge.outbox import DropReason, Outbox, Priority, priority_for
from edge.publisher import MqttPublisher, PublishStatus
from edge.sequence import SequenceFile
from edge.serial_source import SerialSource, SourceStats
from tillpulse.config import read_secret
from tillpulse.deadletters import DeadLetters
from tillpulse.logs import kv
from tillpulse.mqtt_link import LinkStatus
from wire.messages import encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

STATUS_FILE: Final = "status.json"
STATUS_EVERY_S: Final = 2.0


class OutboxStatus(msgspec.Struct, kw_only=True):
    depth_high: int
    depth_low: int
    size_bytes: int
    in_flight: int
    dropped_overflow: int
    dropped_expired: int
    duplicates: int
    oldest_age_s: float | None


class AgentStatus(msgspec.Struct, kw_only=True):
    """What ``tillpulse edge status`` shows; written to the state dir every few seconds."""

    written_unix: float
    running: bool = True  # False in the last status a cleanly stopped agent writes
    site: str
    device: str
    link: LinkStatus
    publishing: PublishStatus
    outbox: OutboxStatus
    sources: list[SourceStats]
    deadletters_kept: int
    deadletters_evicted: int


class Agent:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.state_dir = Path(config.agent.state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.outbox = Outbox(
            config.outbox_path,
            max_bytes=config.outbox.max_bytes,
            low_priority_ttl_s=config.outbox.low_priority_ttl_s,
            max_in_flight=config.mqtt.inflight_window,
        )
        self.deadletters = DeadLetters(self.state_dir / "deadletters")
        self.sequence = SequenceFile(self.state_dir / "agent.seq")
        password = None
        if config.mqtt.username is not None:
            password = read_secret(config.mqtt.password_file, PASSWORD_ENV)
        self.publisher = MqttPublisher(
            config.mqtt,
            site=config.agent.site,
            device=config.agent.device,
            outbox=self.outbox,
            password=password,
        )
        self.sources = [
            SerialSource(
                port.port,
                port.baudrate,
                site=config.agent.site,
                outbox=self.outbox,
                deadletters=self.deadletters,
            )
            for port in config.serial
        ]
        self.stop = threading.Event()

    def run(self) -> int:
        workers = [
            self._thread("publisher", self.publisher.run),
            self._thread("health", self._sample_health),
            *(self._thread(f"serial:{s.stats.port}", s.run) for s in self.sources),
        ]
        systemd.notify("READY=1")
        log.info(
            "agent_started", extra=kv(device=self.config.agent.device, ports=len(self.sources))
        )
        watchdog_s = systemd.watchdog_interval_s()
        next_ping = 0.0
        failed = False
        while not self.stop.wait(STATUS_EVERY_S if watchdog_s is None else min(watchdog_s, 2.0)):
            self.write_status()
            dead = [w.name for w in workers if not w.is_alive()]
            if dead:
                log.error("worker_died", extra=kv(workers=",".join(dead)))
                failed = True
                self.stop.set()
                break
            if watchdog_s is not None and time.monotonic() >= next_ping:
                systemd.notify("WATCHDOG=1")
                next_ping = time.monotonic() + watchdog_s
        systemd.notify("STOPPING=1")
        for worker in workers:
            worker.join(timeout=10)
        self.write_status(running=False)
        self.outbox.close()
        self.deadletters.close()
        log.info("agent_stopped", extra=kv(failed=failed))
        return 1 if failed else 0  # non-zero: systemd's Restart= brings it back

    def status(self, *, running: bool = True) -> AgentStatus:
        stats = self.outbox.stats()
        return AgentStatus(
            written_unix=time.time(),
            running=running,
            site=self.config.agent.site,
            device=self.config.agent.device,
            link=self.publisher.link.status,
            publishing=self.publisher.status,
            outbox=OutboxStatus(
                depth_high=stats.depth[Priority.HIGH],
                depth_low=stats.depth[Priority.LOW],
                size_bytes=sum(stats.size_bytes.values()),
                in_flight=stats.in_flight,
                dropped_overflow=stats.dropped[DropReason.OVERFLOW],
                dropped_expired=stats.dropped[DropReason.EXPIRED],
                duplicates=stats.duplicates,
                oldest_age_s=stats.oldest_age_s,
            ),
            sources=[source.stats for source in self.sources],
            deadletters_kept=self.deadletters.kept,
            deadletters_evicted=self.deadletters.evicted,
        )

    def write_status(self, *, running: bool = True) -> None:
        path = self.state_dir / STATUS_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(msgspec.json.encode(self.status(running=running)))
        temporary.replace(path)

    def _sample_health(self, stop: threading.Event) -> None:
        topic = device_topic(self.config.agent.site, self.config.agent.device, Stream.HEALTH)
        while not stop.is_set():
            stats = self.outbox.stats()
            sample = host_health.sample(
                site=self.config.agent.site,
                device=self.config.agent.device,
                seq=self.sequence.next(),
                ts_ns=time.time_ns(),
                state_dir=self.state_dir,
                outbox_depth=stats.total_depth,
                outbox_dropped=stats.dropped_since_open,
            )
            try:
                self.outbox.put(
                    topic,
                    encode(sample),
                    priority_for(Stream.HEALTH),
                    self.config.agent.device,
                    sample.seq,
                )
            except OutboxError as exc:  # a sample is not worth stopping the agent for
                log.warning("health_sample_not_stored", extra=kv(error=str(exc)))
            stop.wait(self.config.health.interval_s)

    def _thread(self, name: str, target: Callable[[threading.Event], None]) -> threading.Thread:
        thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        thread.start()
        return thread


def read_status(state_dir: str | Path) -> AgentStatus:
    return msgspec.json.decode((Path(state_dir) / STATUS_FILE).read_bytes(), type=AgentStatus)
