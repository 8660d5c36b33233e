"""What every alert output reports: its counters, and the error it raises when it can't deliver."""

from __future__ import annotations

import msgspec


class OutputError(Exception):
    """An output could not deliver; the text names the target and the cause."""


class OutputStats(msgspec.Struct, kw_only=True):
    delivered: int = 0
    refused: int = 0  # the server refused them for good: logged and dropped
    failures: int = 0  # calls that raised OutputError
    dropped: int = 0  # MQTT only: the oldest pending alerts, over ``max_pending``
