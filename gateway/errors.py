"""The gateway's error hierarchy."""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class SpoolError(GatewayError):
    """The spool directory cannot be used; the text names the file and the cause."""


class SpoolLockedError(SpoolError):
    """Another process has the spool directory open (one owner per directory)."""


class SpoolCorruptError(SpoolError):
    """A record that is not a torn tail failed its check: the text names file and offset.

    Only the end of the newest segment can be torn by a crash; a bad record
    anywhere else is damage that needs a person, so the spool refuses to guess.
    """


class SpoolFullError(SpoolError):
    """Nothing was appended: the spool is at ``max_bytes``, or the disk is full or
    failing (ENOSPC, EDQUOT, EIO). It goes away by itself once there is room.

    The caller applies back-pressure: it does not acknowledge the MQTT
    messages behind the append, so the broker keeps them in the session.
    """


class SinkError(GatewayError):
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
