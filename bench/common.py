"""What every benchmark shares: the machine description and the JSON line."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from collections.abc import Sequence
from typing import Any


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def emit(bench: str, figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line on stdout."""
    sys.stdout.write(json.dumps({"bench": bench, **figures, "machine": machine()}) + "\n")
