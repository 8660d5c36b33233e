"""Reading and atomically replacing the files the tool owns or edits."""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from pathlib import Path

from broker.errors import ProvisionError


def read_text(path: Path) -> str:
    """The file's text; "" when it does not exist yet."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        raise ProvisionError(f"cannot read {path}: {exc}; run as root or fix the file") from exc


def replace_file(path: Path, text: str, *, mode: int | None = None) -> None:
    """Replace ``path`` with ``text``: readers see the old file or the new one, and so
    does a power cut (temporary file, fsync, rename, fsync of the directory). Keeps the
    file's owner and mode; a new file takes the directory's owner and 0600. ``mode``
    overrides the mode. Raises `ProvisionError`."""
    try:
        old = path.stat()
        owner, group, keep = old.st_uid, old.st_gid, stat.S_IMODE(old.st_mode)
    except FileNotFoundError:
        parent = path.parent.stat()
        owner, group, keep = parent.st_uid, parent.st_gid, 0o600
    except OSError as exc:
        raise _error(path, exc) from exc
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fchmod(fd, keep if mode is None else mode)
            if (owner, group) != (os.geteuid(), os.getegid()):
                os.fchown(fd, owner, group)  # the broker's user must still read it
            os.fsync(fd)
        temporary.replace(path)
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise _error(path, exc) from exc


def _error(path: Path, exc: OSError) -> ProvisionError:
    if exc.errno in (errno.EPERM, errno.EACCES):
        fix = "run as root or as the file's owner"
    elif exc.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "free space on that disk"
    else:
        fix = "check the directory"
    return ProvisionError(f"cannot write {path}: {exc.strerror}; {fix}")
