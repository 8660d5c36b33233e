"""What every sink dialect shares: sending a batch and classifying InfluxDB's answer.

Outcome classes of one write request:
- 2xx: the lines are written.
- 413 (body too large): the batch is split in halves and each half written,
  recursively; a single line still too large is rejected.
- 400 / 422 (bad points; InfluxDB 1.x answers a batch with some bad points
  with 400 "partial write: ... dropped=N" after writing the good ones): the
  batch is bisected until every bad line stands alone; the good lines are
  written (again: idempotent), the bad ones come back in
  `WriteResult.rejected` with InfluxDB's error text, for dead letters. When
  InfluxDB reports every line of a batch dropped (a field changed type, say),
  the whole batch is rejected at once instead of in 2n requests. But when
  every line of a batch of several is refused and InfluxDB did not say it
  dropped points ("partial write ... dropped=N"), that is taken for a
  misconfiguration (a proxy or a wrong path answering 400, a max-body-size
  smaller than any line): `SinkConfigError`, and the batch stays in the spool
  rather than going wholesale to the (bounded, evicting) dead letters.
- 429, 5xx and connection errors: `SinkRetriableError`, carrying the
  Retry-After delay when the server sent one. Nothing of the batch counts as
  written; the caller retries the whole batch (what was written is rewritten
  onto the same points).
- anything else (401, 403, 404: credentials, database, bucket, URL):
  `SinkConfigError`. Retrying will not help until the config is fixed.
Every split and every rejection is logged and counted in the result.
"""

from __future__ import annotations

import json
import logging
import re
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Final, Self

from runtime.influx_sinks.errors import SinkConfigError, SinkRetriableError
from runtime.logs import kv

log = logging.getLogger(__name__)

_TOO_LARGE: Final = 413
_BAD_POINTS: Final = frozenset({400, 422})
_TOO_MANY: Final = 429
_MAX_ERROR_TEXT: Final = 1000
_DROPPED: Final = re.compile(r"partial write.* dropped=(\d+)")
# urllib3 starts its errors with the repr of its connection or pool
_CONNECTION_REPR: Final = re.compile(
    r"<[\w.]+ object at 0x[0-9a-f]+>: |HTTPS?ConnectionPool\(host=[^)]*\): "
)


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer, reduced to what the classification needs."""

    status: int
    text: str  # InfluxDB's error message ("" on success)
    retry_after: str | None = None  # the Retry-After header, as sent


@dataclass(frozen=True, slots=True)
class Rejected:
    line: bytes
    reason: str  # "HTTP 400: <InfluxDB's error text>"


@dataclass(slots=True)
class WriteResult:
    written: int = 0  # lines InfluxDB accepted
    rejected: list[Rejected] = field(default_factory=list)
    requests: int = 0
    splits: int = 0  # batches split in halves (413) or bisected (400/422)
    latency_s: float = 0.0  # wall time of the whole write, every request included


class LineSink(ABC):
    """Writes batches of line-protocol lines (precision ns) to one InfluxDB target."""

    #: for logs and dead letters, e.g. "influxdb-v1 http://host:8086 db=tillpulse"
    name: str

    @abstractmethod
    def _post(self, body: bytes) -> Reply:
        """Send one write request; raise `SinkRetriableError` when no answer came."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, lines: Sequence[bytes]) -> WriteResult:
        """Write ``lines``; bad ones come back in ``rejected``. Raises `SinkRetriableError`
        (write the whole batch again later) or `SinkConfigError` (fix the config)."""
        result = WriteResult()
        started = time.monotonic()
        self._write_part(lines, result)
        result.latency_s = time.monotonic() - started
        if len(lines) > 1 and not result.written and not _said_dropped(result.rejected):
            raise SinkConfigError(
                f"{self.name}: refused every one of {len(lines)} lines, the last with "
                f"{result.rejected[-1].reason}; that is a misconfiguration (URL, proxy, "
                "max-body-size), not bad points: kept in the spool, not dead-lettered"
            )
        if result.splits:
            log.warning(
                "sink_batch_split",
                extra=kv(
                    sink=self.name,
                    lines=len(lines),
                    splits=result.splits,
                    requests=result.requests,
                    rejected=len(result.rejected),
                ),
            )
        return result

    def _write_part(self, lines: Sequence[bytes], result: WriteResult) -> None:
        reply = self._send(lines, result)
        if 200 <= reply.status < 300:
            result.written += len(lines)
            return
        reason = f"HTTP {reply.status}: {reply.text}"
        if len(lines) == 1 or _all_dropped(reply, len(lines)):
            result.rejected.extend(Rejected(line, reason) for line in lines)
            log.warning(
                "sink_points_rejected", extra=kv(sink=self.name, lines=len(lines), reason=reason)
            )
            return
        result.splits += 1
        middle = len(lines) // 2
        self._write_part(lines[:middle], result)
        self._write_part(lines[middle:], result)

    def _send(self, lines: Sequence[bytes], result: WriteResult) -> Reply:
        """One request; returns 2xx, 413, 400 and 422 answers, raises on the others."""
        result.requests += 1
        reply = self._post(b"\n".join(lines))
        status = reply.status
        if 200 <= status < 300 or status == _TOO_LARGE or status in _BAD_POINTS:
            return reply
        message = f"{self.name}: HTTP {status}: {reply.text}"
        if status == _TOO_MANY or status >= 500:
            raise SinkRetriableError(
                message, status=status, retry_after_s=retry_after_seconds(reply.retry_after)
            )
        raise SinkConfigError(
            f"{message} (check the credentials, the database or bucket, and the URL)",
            status=status,
        )


def _all_dropped(reply: Reply, lines: int) -> bool:
    """InfluxDB's "partial write: ... dropped=N" with N = every line: no need to bisect."""
    dropped = _DROPPED.search(reply.text) if reply.status in _BAD_POINTS else None
    return dropped is not None and int(dropped.group(1)) == lines


def _said_dropped(rejected: list[Rejected]) -> bool:
    """Did InfluxDB itself say it dropped points ("partial write ... dropped=N")?"""
    return any(_DROPPED.search(r.reason) for r in rejected)


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A Retry-After header (delay in seconds, or an HTTP date) as seconds from ``now``.

    None when absent or unreadable; never negative.
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


def unreachable(url: str, exc: BaseException) -> str:
    """A failed connection as ``host:port: cause``: urllib3's own text starts with the
    repr of its connection object (``<...HTTPConnection object at 0x...>``) or pool,
    which says nothing to an operator."""
    reason = getattr(exc, "reason", None)  # MaxRetryError wraps the cause
    cause = _CONNECTION_REPR.sub("", str(reason if isinstance(reason, Exception) else exc))
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"cannot reach {parts.hostname}:{port}: {cause or type(exc).__name__}"


def error_text(body: bytes | str | None) -> str:
    """InfluxDB's error message from a response body (1.x: ``error``, 2.x: ``message``)."""
    if not body:
        return ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        document = json.loads(text)
    except ValueError:
        return text.strip()[:_MAX_ERROR_TEXT]
    if isinstance(document, dict):
        message = document.get("error") or document.get("message")
        if isinstance(message, str):
            return message[:_MAX_ERROR_TEXT]
    return text.strip()[:_MAX_ERROR_TEXT]
