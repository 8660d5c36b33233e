"""Helpers shared by the gateway tests: payment lines as wire encodes them, and counts."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

from testkit.factories import BASE_TS
from testkit.servers import InfluxDB1Server
from wire.timestamps import NS_PER_DAY

# testkit's events carry fixed times of November 2025, beyond the default
# [timestamps] max_event_age of 30 days: a gateway that replays them is
# configured to reach back that far (a day to spare).
FIXED_PAST_MAX_AGE = f"{(time.time_ns() - BASE_TS) // NS_PER_DAY + 2}d"


def type_conflicts(lines: list[bytes], every: int) -> tuple[list[bytes], set[bytes]]:
    """Every ``every``-th line with amount_minor as a float: a field type conflict."""
    out = list(lines)
    for i in range(every - 1, len(out), every):
        head, _, rest = out[i].partition(b",amount_minor=")
        value, _, tail = rest.partition(b"i,")
        out[i] = b"%s,amount_minor=%s.5,%s" % (head, value, tail)
    return out, set(out[every - 1 :: every])


def payment_points(server: InfluxDB1Server, db: str) -> int:
    rows = server.series_values("SELECT count(txn_id) FROM payment", db)
    return int(rows[0][1]) if rows else 0


def payment_counts(server: InfluxDB1Server, db: str) -> tuple[int, int]:
    """(points, distinct txn_ids) of measurement ``payment``: equal means no duplicates."""
    distinct = server.series_values("SELECT count(distinct(txn_id)) FROM payment", db)
    return payment_points(server, db), int(distinct[0][1]) if distinct else 0


class Child:
    """``python -m <module> <args>`` from the repo root; its stdout lines collected."""

    def __init__(self, module: str, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", module, *args],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).parents[2],
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        self.lines.extend(line.strip() for line in self.process.stdout)

    def kill(self) -> None:
        """SIGKILL, then reap and read the rest of what it printed."""
        self.process.kill()
        self.process.wait()
        self._reader.join()
