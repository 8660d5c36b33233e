"""A job's small state file (msgspec JSON): read it back, or set a bad one aside.

Used by the cloud jobs for what must survive between runs (alert incidents,
detector memory). Writing is atomic and durable (`write_atomically`: temporary
file, fsync, rename, fsync of the directory), so a crash or a power cut leaves
the old state or the new one. A file that cannot be read, or is
of another format, is renamed ``<name>.corrupt-<UTC time>`` with a warning,
and the caller starts empty: a state file never stops a job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import TypeVar

import msgspec

from runtime.logs import kv

log = logging.getLogger(__name__)

T = TypeVar("T", bound=msgspec.Struct)


class UnreadableState(Exception):
    """The file was there but could not be used; it has been moved aside."""


def read_state(path: Path, kind: type[T], *, what: str) -> T | None:
    """The state in ``path``; None when there is none. Raises `UnreadableState`
    (after moving the file aside) when it cannot be decoded as ``kind``."""
    try:
        return msgspec.json.decode(path.read_bytes(), type=kind)
    except FileNotFoundError:
        return None
    except (OSError, msgspec.DecodeError) as exc:  # ValidationError is a DecodeError
        set_aside(path, str(exc), what=what)
        raise UnreadableState(str(exc)) from exc


def set_aside(path: Path, reason: str, *, what: str) -> None:
    """Rename a state file this version cannot use, so the next write starts afresh."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
    try:
        path.replace(aside)
    except OSError as exc:
        reason += f"; could not move it aside: {exc}"
    log.warning(
        f"{what}_state_corrupt",
        extra=kv(path=str(path), moved_to=str(aside), reason=reason, action="start empty"),
    )


def write_state(path: Path, state: msgspec.Struct) -> None:
    """Replace ``path`` with ``state`` atomically; raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, msgspec.json.encode(state))


def write_atomically(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data``; readers see the old file or the new one, never a mix.

    ``durable`` (the default): temporary file, fsync, rename, fsync of the directory,
    so a power cut also leaves the old file or the new one. ``durable=False`` skips
    both fsyncs, for a file rewritten every few seconds whose loss costs nothing (the
    edge agent's status file: an SD card should not pay two flushes per write).

    Raises OSError; a temporary file a failed write left (on a full disk) is removed,
    so it gives back its space.
    """
    temporary = path.with_name(f"{path.name}.tmp")
    try:
        with open(temporary, "wb") as handle:
            handle.write(data)
            if durable:
                handle.flush()
                os.fsync(handle.fileno())
        temporary.replace(path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise
    if not durable:
        return
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
