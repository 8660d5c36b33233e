"""The systemd unit of this installation, from the unit installed with the package.

``tillpulse edge install-unit`` writes it with ``ExecStart`` pointing at the
virtualenv tillpulse runs from, so a field engineer never has to find it in
site-packages or in a checkout of the repository. The example config
(``sample-config``) and writing a file are the same for every component:
`runtime.deploy_files`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Final

from runtime.cli import OperatorError
from runtime.deploy_files import packaged

EXAMPLE_CONFIG: Final = "edge.example.toml"
UNIT_NAME: Final = "tillpulse-edge.service"
DEFAULT_UNIT_DIR: Final = "/etc/systemd/system"
# The executable the shipped unit names; install-unit replaces it with the real one.
SHIPPED_EXECUTABLE: Final = "/opt/tillpulse/venv/bin/tillpulse"


def unit_text(venv: str | Path = sys.prefix) -> str:
    """The systemd unit, its ``ExecStart`` running ``<venv>/bin/tillpulse``."""
    executable = Path(venv).absolute() / "bin" / "tillpulse"
    if not os.access(executable, os.X_OK):
        raise OperatorError(
            f"no tillpulse executable at {executable}: pass --venv with the virtualenv "
            "tillpulse is installed in"
        )
    shipped = f"ExecStart={SHIPPED_EXECUTABLE} "
    lines = packaged("edge", UNIT_NAME).splitlines(keepends=True)
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
