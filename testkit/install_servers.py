"""The Debian packages of the real servers the demo and the tests start, installed
when missing: with apt-get as root or with passwordless sudo, else the one command to
run is named. `make test` and `make demo` (`tillpulse demo --install-missing`) share
it, so a fresh machine needs no set-up step of its own.

    python -m testkit.install_servers --for tests      # what `make test` runs first
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

from testkit.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    ManagedServer,
    MosquittoServer,
    VictoriaMetricsServer,
)

_NEED = {"demo": "the demo needs", "tests": "the tests need"}


def needs(purpose: str) -> dict[str, str]:
    """binary -> the Debian package that installs it, for the demo or the tests (read
    when called: a test may rename a server's binary)."""
    servers: list[type[ManagedServer]] = [MosquittoServer, InfluxDB1Server]
    if purpose == "tests":
        servers.append(VictoriaMetricsServer)
    found = {server.binary: server.apt_package for server in servers}
    if purpose == "tests":
        found["mosquitto_sub"] = "mosquitto-clients"  # the broker's healthcheck in a test
    return found


def missing(binaries: dict[str, str]) -> list[str]:
    """The packages of the binaries not on PATH nor in /usr/sbin (Debian's mosquitto)."""
    return [
        package
        for binary, package in binaries.items()
        if not (shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/sbin"))
    ]


def ensure_installed(purpose: str, *, install: bool) -> None:
    """Install the missing packages with apt-get (``install``, as root or with
    passwordless sudo); else raise BinaryNotFoundError with the command to run."""
    binaries = needs(purpose)
    packages = missing(binaries)
    if not packages:
        return
    names = " ".join(packages)
    sudo = _sudo() if install else None
    if sudo is None:
        raise BinaryNotFoundError(
            f"{_NEED[purpose]} the Debian packages {names}; install them with: "
            f"sudo apt-get update && sudo apt-get install -y {names} (or run `sudo make "
            f"{purpose.removesuffix('s')}`, which does)"
        )
    sys.stderr.write(f"the {purpose}: installing {names} with apt-get\n")
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([*sudo, "apt-get", "update"], [*sudo, "apt-get", "install", "-y", *packages]):
        if subprocess.run(command, env=environment, check=False).returncode != 0:
            raise BinaryNotFoundError(f"`{' '.join(command)}` failed (its output is above)")
    still = missing(binaries)
    if still:
        raise BinaryNotFoundError(f"apt-get installed {names} but {' '.join(still)} is missing")


def _sudo() -> list[str] | None:
    """The prefix that runs apt-get as root here: none as root, ``sudo -n`` when it needs
    no password; None when neither works (the operator runs the command)."""
    if os.geteuid() == 0:
        return []
    if (
        shutil.which("sudo")
        and subprocess.run(["sudo", "-n", "true"], capture_output=True, check=False).returncode == 0
    ):
        return ["sudo", "-n"]
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m testkit.install_servers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--for",
        dest="purpose",
        choices=["demo", "tests"],
        default="tests",
        help="whose servers (default tests: the demo's and VictoriaMetrics, mosquitto_sub)",
    )
    args = parser.parse_args(argv)
    try:
        ensure_installed(args.purpose, install=True)
    except BinaryNotFoundError as exc:
        sys.stderr.write(f"{exc}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
