"""Process lifecycle shared by the long-running components."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from runtime.logs import kv

log = logging.getLogger(__name__)


def stop_on_signals(stop: threading.Event, component: str) -> None:
    """Set ``stop`` on SIGTERM (systemd, docker stop) and SIGINT (Ctrl-C)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        log.info("stopping", extra=kv(component=component, signal=signal.Signals(signum).name))
        stop.set()

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
