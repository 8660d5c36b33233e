"""The agent's status file: what ``tillpulse edge status`` shows, and how it gets to disk.

The agent writes `AgentStatus` to ``status.json`` in its state dir every few
seconds. A write normally replaces the file (temporary file, rename), so a
reader sees the old status or the new one. On a full disk the temporary file
cannot be written, yet that is exactly when the status must say "degraded";
so the file is padded with trailing spaces (valid JSON) to whole pages, and a
failed replace falls back to overwriting it in place, which reuses the pages
it already has. A reader may then, rarely, catch a half-written file and read
it again. A write that fails both ways is logged (once per outage) and never
raised: the status file must not stop the agent.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Final

import msgspec

from edge.publisher import PublishStatus
from edge.serial_source import SourceStats
from runtime.link_state import LinkStatus
from runtime.logs import kv
from runtime.statefile import write_atomically

log = logging.getLogger(__name__)

STATUS_FILE: Final = "status.json"
_PAGE: Final = 4096


class OutboxStatus(msgspec.Struct, kw_only=True):
    depth_high: int
    depth_low: int
    size_bytes: int
    in_flight: int
    dropped_overflow: int
    dropped_expired: int
    duplicates: int
    oldest_age_s: float | None


class AgentStatus(msgspec.Struct, kw_only=True):
    """What ``tillpulse edge status`` shows; written to the state dir every few seconds."""

    written_unix: float
    running: bool = True  # False in the last status a cleanly stopped agent writes
    site: str
    device: str
    link: LinkStatus
    publishing: PublishStatus
    outbox: OutboxStatus
    sources: list[SourceStats]
    deadletters_kept: int
    deadletters_evicted: int
    deadletters_lost: int = 0  # not kept: the disk refused the write
    # Why the agent cannot do all of its job right now ("outbox: disk full ...", "publish:
    # the broker refuses publishes for device ..."); empty when healthy. It keeps running
    # and recovers by itself once the cause is gone (a refusal: once the broker takes
    # that device's messages again).
    degraded: list[str] = []
    health_samples_skipped: int = 0  # no sequence number could be reserved for them


class StatusFile:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / STATUS_FILE
        self.error: str | None = None  # why the last replace failed; None once one works

    def write(self, status: AgentStatus) -> None:
        """Write ``status``; never raises (see the module docstring)."""
        data = msgspec.json.encode(status)
        data += b" " * (-len(data) % _PAGE)
        try:
            self._replace(data)
        except OSError as exc:
            self._failed(f"cannot replace {self.path}: {exc}")
            self._overwrite(data)
            return
        if self.error is not None:
            log.info("status_file_writable_again", extra=kv(path=str(self.path)))
            self.error = None

    def _replace(self, data: bytes) -> None:
        # Rewritten every few seconds and worthless after a power cut: not durable.
        write_atomically(self.path, data, durable=False)

    def _overwrite(self, data: bytes) -> None:
        try:
            with self.path.open("r+b") as handle:
                handle.write(data)
                handle.truncate()
        except OSError as exc:
            log.debug("status_not_written", extra=kv(path=str(self.path), error=str(exc)))

    def _failed(self, error: str) -> None:
        if self.error is None:
            log.warning("status_file_not_replaced", extra=kv(error=error, action="in place"))
        self.error = error


def read_status(state_dir: str | Path) -> AgentStatus:
    return msgspec.json.decode((Path(state_dir) / STATUS_FILE).read_bytes(), type=AgentStatus)
