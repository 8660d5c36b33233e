"""The Raspberry Pi's own health, sampled as `wire.messages.HostHealth`.

Read from Linux interfaces only (no psutil: the agent keeps its dependencies
to what it must have): CPU temperature from the thermal zone, load average,
/proc/meminfo, disk usage of the state directory, and clock sync from
systemd-timesyncd's flag file or the kernel's adjtimex status. A value the
host does not offer (no thermal zone in a container) is None or a neutral
default, never an error.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

from wire.messages import HostHealth

THERMAL_ZONE: Final = Path("/sys/class/thermal/thermal_zone0/temp")
TIMESYNC_FLAG: Final = Path("/run/systemd/timesync/synchronized")
_TIME_ERROR: Final = 5  # adjtimex return value: clock not synchronised
_TIMEX_BYTES: Final = 1024  # more than struct timex (<sys/timex.h>) on every Linux ABI


def cpu_temp_c(zone: Path = THERMAL_ZONE) -> float | None:
    try:
        return int(zone.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None


def mem_used_pct(meminfo: Path = Path("/proc/meminfo")) -> float:
    values: dict[str, int] = {}
    try:
        for line in meminfo.read_text().splitlines():
            key, _, rest = line.partition(":")
            values[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    total = values.get("MemTotal", 0)
    if total <= 0:
        return 0.0
    return round(100.0 * (total - values.get("MemAvailable", total)) / total, 2)


def disk_used_pct(path: str | Path) -> float:
    try:
        usage = shutil.disk_usage(path)
    except OSError:
        return 0.0
    return round(100.0 * usage.used / usage.total, 2) if usage.total else 0.0


def clock_synced(flag: Path = TIMESYNC_FLAG) -> bool:
    """True if systemd-timesyncd or the kernel says the clock is synchronised."""
    if flag.exists():
        return True
    # ctypes only here (a Pi running systemd-timesyncd with a synced clock never needs
    # it), and libc from this process's own symbols: ctypes.util.find_library would
    # run ldconfig in a subprocess at every sample.
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        # A zeroed struct timex: modes = 0 reads the state and changes nothing.
        state = libc.adjtimex(ctypes.create_string_buffer(_TIMEX_BYTES))
    except (OSError, AttributeError):
        return False
    return bool(state not in (-1, _TIME_ERROR))


def sample(
    *,
    site: str,
    device: str,
    seq: int,
    ts_ns: int,
    state_dir: str | Path,
    outbox_depth: int,
    outbox_dropped: int,
) -> HostHealth:
    return HostHealth(
        site=site,
        device=device,
        ts=ts_ns,
        seq=seq,
        cpu_temp_c=cpu_temp_c(),
        load1=round(os.getloadavg()[0], 2),
        mem_used_pct=mem_used_pct(),
        disk_used_pct=disk_used_pct(state_dir),
        clock_synced=clock_synced(),
        outbox_depth=outbox_depth,
        outbox_dropped=outbox_dropped,
    )
