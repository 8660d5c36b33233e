"""Structured logging: one line per event, ``key=value`` (default) or JSON.

    log = logging.getLogger(__name__)
    log.info("broker_connected", extra=kv(host=host, port=port))

renders as

    ts=2026-11-25T23:59:01.123Z level=info logger=edge.publisher event=broker_connected
        host=b port=1883   (on one line)

Values with spaces, quotes or ``=`` are quoted. Secrets are never passed here.
Card numbers never reach a log line: both formatters replace, in every field of
the record (event, values, traceback), any digit run that `wire.pci` takes for
a card number, in any spelling, with a mask. Code should not log one in the
first place; this is the last line of defence, in one place.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from typing import Any, Final

from wire.pci import mask_pans

_KV_ATTR: Final = "tillpulse_kv"


def kv(**fields: Any) -> dict[str, dict[str, Any]]:
    """The ``extra=`` argument that attaches key=value fields to a log record."""
    return {_KV_ATTR: fields}


def raised_at(exc: BaseException) -> str:
    """``file:line`` where ``exc`` was raised: enough to find a bug without logging the
    data (payloads, topics) its message or traceback might carry."""
    frame = traceback.extract_tb(exc.__traceback__)[-1]
    return f"{frame.filename}:{frame.lineno}"


def configure_logging(level: str = "info", *, json_lines: bool = False) -> None:
    """Send every log record to stderr as one structured line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname.lower(),
        "logger": record.name,
        "event": record.getMessage(),
    }
    fields.update(getattr(record, _KV_ATTR, {}))
    if record.exc_info:
        fields["error"] = logging.Formatter().formatException(record.exc_info)
    return {key: _masked(value) for key, value in fields.items()}


def _masked(value: Any) -> Any:
    """``value``, or its text with card numbers masked if it holds one (see wire.pci)."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value)
    masked = mask_pans(text)
    return value if masked is text else masked


def _quote(value: Any) -> str:
    text = str(value)
    if not text or any(c in text for c in ' ="\n\t'):
        return json.dumps(text)
    return text


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_quote(value)}" for key, value in _fields(record).items())


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)
