"""How a service stops on signals, and which process owns a state directory."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import pytest

from runtime.lifecycle import ServiceSignals, lock_directory


def test_a_first_signal_stops_cleanly_and_a_second_one_at_once() -> None:
    stop = threading.Event()
    with ServiceSignals("test") as signals:
        signals.running(stop)
        os.kill(os.getpid(), signal.SIGTERM)  # systemd: stop the service
        assert stop.wait(5)
        with pytest.raises(KeyboardInterrupt):  # the operator, tired of waiting: now
            os.kill(os.getpid(), signal.SIGINT)
            threading.Event().wait(5)  # the handler raises here, in this thread
    assert signals.received == signal.SIGINT


def test_one_process_at_a_time_owns_a_state_directory(tmp_path: Path) -> None:
    first = lock_directory(tmp_path)
    assert first is not None
    assert lock_directory(tmp_path) is None  # the second agent or job is refused
    os.close(first)  # the first one ended
    again = lock_directory(tmp_path)
    assert again is not None
    os.close(again)
