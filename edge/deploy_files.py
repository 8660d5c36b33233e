"""The files an install needs, read from the installed package itself.

``tillpulse edge sample-config`` prints (or writes) the example config and
``tillpulse edge install-unit`` writes the systemd unit with ``ExecStart``
pointing at the virtualenv tillpulse runs from, so a field engineer never has
to find them in site-packages or in a checkout of the repository.
"""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import Final

from edge.errors import EdgeError

EXAMPLE_CONFIG: Final = "edge.example.toml"
UNIT_NAME: Final = "tillpulse-edge.service"
DEFAULT_UNIT_DIR: Final = "/etc/systemd/system"
# The executable the shipped unit names; install-unit replaces it with the real one.
SHIPPED_EXECUTABLE: Final = "/opt/tillpulse/venv/bin/tillpulse"


class DeployFileError(EdgeError):
    """A deploy file cannot be written: the message names the path and the fix."""


def packaged(name: str) -> str:
    """The text of ``edge/deploy/<name>`` as installed with the package."""
    return files("edge").joinpath("deploy", name).read_text(encoding="utf-8")


def sample_config() -> str:
    return packaged(EXAMPLE_CONFIG)


def unit_text(venv: str | Path = sys.prefix) -> str:
    """The systemd unit, its ``ExecStart`` running ``<venv>/bin/tillpulse``."""
    executable = Path(venv).absolute() / "bin" / "tillpulse"
    if not os.access(executable, os.X_OK):
        raise DeployFileError(
            f"no tillpulse executable at {executable}: pass --venv with the virtualenv "
            "tillpulse is installed in"
        )
    shipped = f"ExecStart={SHIPPED_EXECUTABLE} "
    lines = packaged(UNIT_NAME).splitlines(keepends=True)
    return "".join(
        f"ExecStart={_systemd_word(str(executable))} {line.removeprefix(shipped)}"
        if line.startswith(shipped)
        else line
        for line in lines
    )


def _systemd_word(word: str) -> str:
    """``word`` as one argument of a systemd command line (quoted, % escaped)."""
    escaped = word.replace("%", "%%")
    if any(c.isspace() or c in "\"'\\;" for c in escaped):
        return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def write_file(path: str | Path, text: str, *, force: bool) -> Path:
    """Write ``text`` to ``path`` whole (a temp file renamed over it); an existing file
    only with ``force``. Raises `DeployFileError` naming the path and the fix."""
    target = Path(path)
    if target.is_dir():
        raise DeployFileError(f"{target} is a directory: name the file to write")
    if target.exists() and not force:
        raise DeployFileError(f"{target} exists: pass --force to replace it")
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise DeployFileError(_write_error(target, exc)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)  # no secrets in either file; the service user must read it
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise DeployFileError(_write_error(target, exc)) from exc
    return target


def _write_error(target: Path, exc: OSError) -> str:
    fixes = {
        errno.EACCES: "run it as root (sudo), or choose another place with --out",
        errno.EPERM: "run it as root (sudo), or choose another place with --out",
        errno.ENOENT: f"create {target.parent} first, or choose another place with --out",
        errno.EROFS: "the file system is read-only: remount it read-write, or use --out",
        errno.ENOSPC: "the disk is full: free space, or choose another place with --out",
    }
    fix = fixes.get(exc.errno or 0, "choose another place with --out")
    return f"cannot write {target}: {exc.strerror or exc}: {fix}"
