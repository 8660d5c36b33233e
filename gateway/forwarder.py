"""The forwarder: drains the spool into an InfluxDB sink, in batches, in its own thread.

Loop: wait for a line in the spool; linger up to ``linger_s`` for a full batch
(``batch_lines`` / ``batch_bytes``); write it; then commit it. A batch is
committed only when InfluxDB accepted every line of it, or the lines it
refused for good (400/422, a single line too large) were kept in the dead
letters with InfluxDB's reason. So a crash at any point replays, never skips.

Failures retry the same batch, never skip it:
- `SinkRetriableError` (connection refused or reset, timeouts, 429, 5xx):
  wait the server's Retry-After (capped at ``retry_after_max_s``), else
  capped exponential backoff with jitter (``backoff_initial_s`` doubling up to
  ``backoff_max_s``); logged as a warning and counted in ``retries``.
- `SinkConfigError` (401/403/404...): logged as an error and counted in
  ``config_errors`` every ``config_retry_s`` (with jitter), and tried again
  that slowly, so the spool grows and replays once the config is fixed.
- Anything else (a bug, an error no sink classifies): logged with its
  traceback, counted in ``internal_errors`` and retried with backoff like a
  retriable error; the thread goes on.
During an outage the spool grows (its bound applies back-pressure upstream)
and is replayed, oldest first, when InfluxDB is back.
"""

from __future__ import annotations

import logging
import random
import threading
from collections import deque
from dataclasses import dataclass

from gateway.errors import SpoolError
from gateway.spool import Batch, Spool
from runtime.backoff import Backoff
from runtime.deadletters import DeadLetters
from runtime.influx_sinks import LineSink, WriteResult
from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from runtime.logs import kv

log = logging.getLogger(__name__)

_IDLE_WAIT_S = 0.2  # how often an idle forwarder looks at its stop event


@dataclass(frozen=True, slots=True)
class ForwarderSettings:
    batch_lines: int = 2_000  # the [forwarder] default: gateway/config.py says why
    batch_bytes: int = 4 << 20
    linger_s: float = 0.1
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 300.0
    config_retry_s: float = 30.0
    latency_window: int = 1_000  # batches in the latency p50/p99


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    running: bool
    batches: int
    lines_written: int
    dead_lettered: int
    retries: int
    config_errors: int
    internal_errors: int  # unexpected failures of a write: logged, retried
    last_error: str | None
    latency_p50_s: float | None  # per batch, over the recent window
    latency_p99_s: float | None
    lag_s: float | None  # age of the oldest unforwarded line


class Forwarder:
    def __init__(
        self,
        spool: Spool,
        sink: LineSink,
        dead_letters: DeadLetters,
        settings: ForwarderSettings = ForwarderSettings(),
    ) -> None:
        self._spool = spool
        self._sink = sink
        self._dead_letters = dead_letters
        self._settings = settings
        self._backoff = Backoff(
            settings.backoff_initial_s, settings.backoff_max_s, settings.retry_after_max_s
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._latencies: deque[float] = deque(maxlen=settings.latency_window)
        self._batches = self._written = self._dead_lettered = 0
        self._retries = self._config_errors = self._internal_errors = 0
        self._last_error: str | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self.run, name="forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask the loop to stop and wait for it; an unfinished batch is replayed later."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def run(self) -> None:
        """The forwarding loop, until `stop`; a broken spool or disk ends it (logged, and
        ``running`` turns false in `stats`)."""
        settings = self._settings
        log.info("forwarder_started", extra=kv(sink=self._sink.name))
        self._spool.rewind()  # a batch an earlier run left uncommitted comes first
        try:
            while not self._stop.is_set():
                if not self._spool.wait_unread(1, _IDLE_WAIT_S):
                    continue
                self._spool.wait_unread(settings.batch_lines, settings.linger_s)
                self._forward(self._spool.read(settings.batch_lines, settings.batch_bytes))
        except (SpoolError, OSError) as exc:  # the spool or the dead-letter store broke
            self._last_error = str(exc)
            log.critical("forwarder_failed", extra=kv(error=str(exc)), exc_info=True)
        log.info("forwarder_stopped", extra=kv(sink=self._sink.name))

    def _forward(self, batch: Batch) -> None:
        while not self._stop.is_set():
            try:
                result = self._sink.write(batch.lines)
            except SinkConfigError as exc:
                self._config_errors += 1
                self._last_error = str(exc)
                delay = self._settings.config_retry_s * random.uniform(0.9, 1.1)
                log.error(
                    "forwarder_sink_misconfigured",
                    extra=kv(error=str(exc), retry_in_s=round(delay, 1), lines=len(batch)),
                )
            except SinkRetriableError as exc:
                self._retries += 1
                self._last_error = str(exc)
                delay = self._backoff.next_delay(exc.retry_after_s)
                log.warning(
                    "forwarder_write_retry",
                    extra=kv(
                        error=str(exc),
                        status=exc.status,
                        retry_after_s=exc.retry_after_s,
                        retry_in_s=round(delay, 2),
                        lines=len(batch),
                    ),
                )
            except Exception as exc:  # last resort: retried, never skipped
                self._internal_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                delay = self._backoff.next_delay()
                log.error(
                    "forwarder_unexpected_error",
                    extra=kv(error=self._last_error, retry_in_s=round(delay, 2)),
                    exc_info=True,
                )
            else:
                self._finish(batch, result)
                return
            self._stop.wait(delay)

    def _finish(self, batch: Batch, result: WriteResult) -> None:
        for rejected in result.rejected:
            self._dead_letters.keep(rejected.line, reason=rejected.reason, source=self._sink.name)
        self._spool.commit(batch)
        self._backoff.reset()
        with self._lock:
            self._latencies.append(result.latency_s)
        self._batches += 1
        self._written += result.written
        self._dead_lettered += len(result.rejected)
        if result.rejected:
            log.warning(
                "forwarder_dead_lettered",
                extra=kv(lines=len(result.rejected), first_reason=result.rejected[0].reason),
            )

    def stats(self) -> ForwarderStats:
        with self._lock:
            latencies = sorted(self._latencies)
        return ForwarderStats(
            running=self._thread is not None and self._thread.is_alive(),
            batches=self._batches,
            lines_written=self._written,
            dead_lettered=self._dead_lettered,
            retries=self._retries,
            config_errors=self._config_errors,
            internal_errors=self._internal_errors,
            last_error=self._last_error,
            latency_p50_s=_quantile(latencies, 0.5),
            latency_p99_s=_quantile(latencies, 0.99),
            lag_s=self._spool.stats().oldest_age_s,
        )


def _quantile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank quantile of sorted values, None if there are none."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
