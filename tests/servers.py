"""Real servers for integration tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

The implementation lives in `tillpulse.demo.servers`, which ``tillpulse demo``
uses too; this module keeps the tests' import path (``from tests.servers
import MosquittoServer``). See that module for how the servers are run.
"""

from __future__ import annotations

from tillpulse.demo.servers import (
    BinaryNotFoundError,
    InfluxDB1Server,
    ManagedServer,
    MosquittoServer,
    ServerError,
    ServerFactory,
    ServerHTTPError,
    ServerStartError,
    VictoriaMetricsServer,
    WaitTimeoutError,
    free_port,
    pid_exists,
    wait_until,
)

__all__ = [
    "BinaryNotFoundError",
    "InfluxDB1Server",
    "ManagedServer",
    "MosquittoServer",
    "ServerError",
    "ServerFactory",
    "ServerHTTPError",
    "ServerStartError",
    "VictoriaMetricsServer",
    "WaitTimeoutError",
    "free_port",
    "pid_exists",
    "wait_until",
]
