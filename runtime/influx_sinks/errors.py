"""How a write to InfluxDB failed: retry later, or a person must fix the config."""

from __future__ import annotations


class SinkError(Exception):
    """A write to InfluxDB failed as a whole; nothing of it may be committed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SinkRetriableError(SinkError):
    """Connection errors, 429 and 5xx: try again later, after ``retry_after_s`` if set."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after_s = retry_after_s


class SinkConfigError(SinkError):
    """401/403/404 and other answers that mean the sink is misconfigured (credentials,
    database, bucket, URL). Retrying will not help until a person fixes it."""
