"""The files an install needs, read from the installed package itself, and
``tillpulse <component> sample-config``, the same for every component.

    command = add_sample_config(commands, "gateway")     # in the component's parser
    return print_or_write(args, packaged("gateway", "gateway.example.toml"))

So nobody has to find the example config in site-packages or in a checkout.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from importlib.resources import files
from pathlib import Path

from runtime.cli import Commands, OperatorError, add_command


def packaged(package: str, name: str) -> str:
    """The text of ``<package>/deploy/<name>`` as installed with the package."""
    return files(package).joinpath("deploy", name).read_text(encoding="utf-8")


def add_sample_config(commands: Commands, component: str) -> argparse.ArgumentParser:
    """The ``sample-config`` subcommand: ``--out FILE`` and ``--force``."""
    command = add_command(commands, component, "sample-config", "print the example config to edit")
    command.add_argument("--out", metavar="FILE", help="write it to FILE instead of stdout")
    command.add_argument("--force", action="store_true", help="replace FILE if it exists")
    return command


def print_or_write(args: argparse.Namespace, text: str) -> int:
    """``text`` to stdout, or with ``--out`` to that file (``--force`` to replace it)."""
    if args.out is None:
        sys.stdout.write(text)
        return 0
    target = write_file(args.out, text, force=args.force)
    sys.stderr.write(f"wrote {target}\n")
    return 0


def write_file(path: str | Path, text: str, *, force: bool) -> Path:
    """Write ``text`` to ``path`` whole (a temp file renamed over it); an existing file
    only with ``force``. Raises `OperatorError` naming the path and the fix."""
    target = Path(path)
    if target.is_dir():
        raise OperatorError(f"{target} is a directory: name the file to write")
    if target.exists() and not force:
        raise OperatorError(f"{target} exists: pass --force to replace it")
    try:
        fd, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    except OSError as exc:
        raise OperatorError(_write_error(target, exc)) from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temp, 0o644)  # no secrets in these files; the service user must read them
        os.replace(temp, target)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise OperatorError(_write_error(target, exc)) from exc
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
