"""What every benchmark shares: the machine description and the JSON line."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
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


def iso(ns: int) -> str:
    """A nanosecond timestamp as ISO 8601 UTC, to the second (what the simulator takes)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // 1_000_000_000))


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def process_rss_bytes(pid: int) -> int | None:
    """Resident memory of a running process (``/proc``; None once it is gone, or elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def emit(bench: str, figures: dict[str, Any]) -> None:
    """Print the benchmark's one JSON line on stdout."""
    sys.stdout.write(json.dumps({"bench": bench, **figures, "machine": machine()}) + "\n")
