"""How long `tillpulse --help` and each `tillpulse <component> --help` take, as an
operator runs them: the console script in a fresh process (imports included), the
median of ``--rounds`` runs per command. Target (issue #17): under 0.3 s each; a
component's heavy libraries are imported only by the commands that use them.

    .venv/bin/python -m bench.cli_help [--rounds 7]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, median
from tillpulse.cli import COMPONENTS

TILLPULSE = str(Path(sys.executable).with_name("tillpulse"))


def seconds(*args: str) -> float:
    start = time.perf_counter()
    subprocess.run([TILLPULSE, *args, "--help"], capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    commands = [(), *((name,) for name in COMPONENTS)]
    timings: dict[str, list[float]] = {" ".join(c) or "tillpulse": [] for c in commands}
    for _ in range(args.rounds):  # rounds alternate the commands: a busy moment hits all
        for command in commands:
            timings[" ".join(command) or "tillpulse"].append(seconds(*command))
    emit(
        "cli_help",
        {
            "rounds": args.rounds,
            "median_s": {name: round(median(runs), 3) for name, runs in timings.items()},
            "max_median_s": round(max(median(runs) for runs in timings.values()), 3),
        },
    )


if __name__ == "__main__":
    main()
