"""The wire package's error hierarchy: every contract violation is one of these."""


class WireError(ValueError):
    """Base class: input that does not satisfy the tillpulse wire contract."""


class InvalidIdError(WireError):
    """A site, device or other id that may not appear in a topic or tag."""


class TopicError(WireError):
    """A topic that is not part of the tillpulse topic scheme."""


class MessageDecodeError(WireError):
    """A payload that is not a valid message; the text names the offending field."""


class PanDetectedError(MessageDecodeError):
    """A payload that carries something shaped like a card number (PAN).

    The message never includes the digits themselves, so it is safe to log.
    """


class LineProtocolError(WireError):
    """A point that cannot be written as InfluxDB line protocol and read back intact."""


class FrameError(WireError):
    """A serial frame that cannot be built (e.g. payload over the size limit)."""
