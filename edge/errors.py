"""The edge agent's error hierarchy."""


class EdgeError(Exception):
    """Base class of every error the edge agent raises on purpose."""


class OutboxError(EdgeError):
    """The outbox database failed; the text names the file and what SQLite said."""


class OutboxOpenError(OutboxError):
    """The outbox file cannot be opened: unwritable path, not a database, newer schema."""


class OutboxFullError(OutboxError):
    """Nothing was stored: the high-priority hard cap is reached, or the disk is full.

    The caller applies back-pressure: it does not acknowledge the serial frame
    (no LinkAck), so the device keeps the payment and sends it again later.
    """
