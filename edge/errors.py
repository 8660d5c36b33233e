"""The edge agent's error hierarchy."""


class EdgeError(Exception):
    """Base class of every error the edge agent raises on purpose."""


class StateDirError(EdgeError):
    """The state directory cannot be used at all (read-only, permissions): a person must act.

    The agent exits with a one-line message and the code systemd is told not to
    restart on (RestartPreventExitStatus); a full disk is not this error, the
    agent runs degraded through it.
    """


class SequenceError(EdgeError):
    """A block of sequence numbers could not be reserved on disk; no number was handed out."""


class OutboxError(EdgeError):
    """The outbox database failed; the text names the file and what SQLite said."""


class OutboxOpenError(OutboxError):
    """The outbox file cannot be opened: unwritable path, not a database, newer schema."""


class OutboxFullError(OutboxError):
    """Nothing was stored: the high-priority hard cap is reached, or the disk refused the
    write (full, over quota, I/O error).

    The caller applies back-pressure: it does not acknowledge the serial frame
    (no LinkAck), so the device keeps the payment and sends it again later.
    """
