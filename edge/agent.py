"""The edge agent: serial sources and host health -> outbox -> MQTT publisher.

Threads: one per serial port (`SerialSource`), one sampling host health, one
running the MQTT publisher; the main thread supervises. It writes the status
file that ``tillpulse edge status`` reads, pings the systemd watchdog only
while every worker thread is alive (a dead thread means systemd restarts the
agent, and the outbox makes that lossless), and on SIGTERM/SIGINT stops the
workers, says "offline" on MQTT and closes the outbox.

A full or failing disk degrades the agent, never stops it: each part that
cannot write keeps what it cannot store out of its hands (the outbox does not
acknowledge a frame it could not store, so the terminal keeps the payment; the
health sampler skips a sample it could not number) and tries again later, and
the status file lists every such reason under ``degraded`` until it is gone.
A state dir that cannot be written at all (read-only filesystem, permissions)
is refused before the agent starts (`edge.config.check_edge_config`, which
``edge run`` and ``edge check-config`` share): a person must fix it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from edge import host_health, systemd
from edge.config import EdgeConfig
from edge.errors import OutboxError, SequenceError, StateDirError
from edge.outbox import DropReason, Outbox, Priority, priority_for
from edge.publisher import MqttPublisher
from edge.sequence import SequenceFile
from edge.serial_source import SerialSource
from edge.status import AgentStatus, OutboxStatus, StatusFile
from runtime.backoff import Backoff
from runtime.deadletters import DeadLetters
from runtime.logs import kv
from wire.messages import encode
from wire.topics import Stream, device_topic

log = logging.getLogger(__name__)

STATUS_EVERY_S: Final = 2.0
HEALTH_SEQUENCE_FILE: Final = "agent.seq"  # the health stream's seq counter, in the state dir
HEALTH_RETRY_MIN_S: Final = 1.0


class Agent:
    def __init__(self, config: EdgeConfig) -> None:
        self.config = config
        self.state_dir = Path(config.agent.state_dir)
        try:  # edge.config.check_edge_config checked it can, for the command line
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateDirError(f"cannot create the state dir {self.state_dir}: {exc}") from exc
        self.outbox = Outbox(
            config.outbox_path,
            max_bytes=config.outbox.max_bytes,
            low_priority_ttl_s=config.outbox.low_priority_ttl_s,
            max_in_flight=config.mqtt.inflight_window,
        )
        try:
            self.deadletters = DeadLetters(self.state_dir / "deadletters")
        except OSError as exc:
            raise StateDirError(f"cannot open the dead letters in {self.state_dir}: {exc}") from exc
        # The health stream's counter (its only sequenced stream of its own). The file keeps
        # its first name: a new one would restart at 0 and overwrite stored points.
        self.health_sequence = SequenceFile(self.state_dir / HEALTH_SEQUENCE_FILE)
        self.status_file = StatusFile(self.state_dir)
        self.health_samples_skipped = 0
        password = config.mqtt.password()
        self.publisher = MqttPublisher(
            config.mqtt,
            site=config.agent.site,
            device=config.agent.device,
            outbox=self.outbox,
            deadletters=self.deadletters,
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
        # At once, not in 2 s: `edge status` works from the start, and the file then holds
        # the pages it needs to be rewritten in place once the disk is full.
        self.write_status()
        while not self.stop.wait(STATUS_EVERY_S if watchdog_s is None else min(watchdog_s, 2.0)):
            self.write_status()
            dead = [w.name for w in workers if not w.is_alive()]
            if dead and not self.stop.is_set():  # a stop mid-turn: the workers just ended
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
        """Raises `OutboxError` if the outbox cannot be read."""
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
            deadletters_lost=self.deadletters.lost,
            degraded=self.degraded(),
            health_samples_skipped=self.health_samples_skipped,
        )

    def degraded(self) -> list[str]:
        """Why the agent cannot do all of its job right now, one reason per part; [] if healthy."""
        reasons = {
            "outbox": self.outbox.disk_error,
            "sequence": self.health_sequence.error,
            "status file": self.status_file.error,
            "dead letters": self.deadletters.last_error,
        }
        return [
            *(f"{part}: {reason}" for part, reason in reasons.items() if reason is not None),
            *(f"publish: {reason}" for reason in self.publisher.degraded()),
        ]

    def write_status(self, *, running: bool = True) -> None:
        """Write the status file; never raises (a status must not stop the agent)."""
        try:
            status = self.status(running=running)
        except OutboxError as exc:
            log.warning("status_not_written", extra=kv(error=str(exc)))
            return
        self.status_file.write(status)

    def _sample_health(self, stop: threading.Event) -> None:
        topic = device_topic(self.config.agent.site, self.config.agent.device, Stream.HEALTH)
        interval_s = self.config.health.interval_s
        # After a skipped sample, try again sooner than the interval: that clears the
        # "degraded" as soon as the disk takes writes again.
        retry = Backoff(min(HEALTH_RETRY_MIN_S, interval_s), interval_s)
        while not stop.is_set():
            try:
                stored = self._store_health_sample(topic)
            except Exception as exc:  # last resort: a sample is not worth the thread
                self.health_samples_skipped += 1
                log.error(
                    "health_sample_failed",
                    extra=kv(error=f"{type(exc).__name__}: {exc}"),
                    exc_info=True,
                )
                stored = False
            if stored:
                retry.reset()
                stop.wait(interval_s)
            else:
                stop.wait(retry.next_delay())

    def _store_health_sample(self, topic: str) -> bool:
        """One sample into the outbox; False if skipped (counted): it could not be numbered."""
        try:
            seq = self.health_sequence.next()
        except SequenceError as exc:
            # Never a number that is not durably reserved: a reused one would overwrite
            # an InfluxDB point after a restart. A sample is not worth more than a count.
            self.health_samples_skipped += 1
            log.warning(
                "health_sample_skipped",
                extra=kv(error=str(exc), skipped=self.health_samples_skipped),
            )
            return False
        try:
            stats = self.outbox.stats()
            sample = host_health.sample(
                site=self.config.agent.site,
                device=self.config.agent.device,
                seq=seq,
                ts_ns=time.time_ns(),
                state_dir=self.state_dir,
                outbox_depth=stats.total_depth,
                outbox_dropped=stats.dropped_since_open,
            )
            self.outbox.put(
                topic, encode(sample), priority_for(Stream.HEALTH), self.config.agent.device, seq
            )
        except OutboxError as exc:  # a sample is not worth stopping the agent for
            log.warning("health_sample_not_stored", extra=kv(error=str(exc)))
        return True

    def _thread(self, name: str, target: Callable[[threading.Event], None]) -> threading.Thread:
        thread = threading.Thread(target=target, args=(self.stop,), name=name, daemon=True)
        thread.start()
        return thread
