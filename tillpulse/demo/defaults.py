"""The demo's defaults, in a module of their own: the command line shows them in
``--help`` without importing the stack (servers, detection) that uses them."""

from __future__ import annotations

from pathlib import Path
from typing import Final

TERMINALS: Final = 200
SENSORS: Final = 50
SERIAL: Final = 3  # terminals over ptys, each through its own edge agent
DURATION_S: Final = 240.0  # wall clock for the simulated day
SEED: Final = 7
STATE_DIR: Final = Path(".demo")
