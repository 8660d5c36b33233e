"""InfluxDB sinks: pre-encoded line protocol in, a classified `WriteResult` out.

`V2Sink` (default dialect: token/org/bucket through influxdb-client; InfluxDB
2.x, 3.x, Cloud, 1.8+) and `V1Sink` (``/write?db=&rp=`` with user/password;
every InfluxDB 1.x) share `LineSink`, which owns the answer handling.
"""

from runtime.config_sections import InfluxSection
from runtime.influx_sinks.base import LineSink, Rejected, WriteResult, retry_after_seconds
from runtime.influx_sinks.v1 import V1Sink
from runtime.influx_sinks.v2 import V2Sink

__all__ = [
    "LineSink",
    "Rejected",
    "V1Sink",
    "V2Sink",
    "WriteResult",
    "make_sink",
    "retry_after_seconds",
]


def make_sink(influx: InfluxSection) -> LineSink:
    """The sink an ``[influxdb]`` section describes."""
    if influx.dialect == "v2":
        assert influx.org is not None and influx.bucket is not None  # checked on load
        return V2Sink(
            influx.url,
            token=influx.token(),
            org=influx.org,
            bucket=influx.bucket,
            timeout_s=influx.timeout_s,
        )
    assert influx.database is not None  # checked on load
    return V1Sink(
        influx.url,
        influx.database,
        retention_policy=influx.retention_policy,
        username=influx.username,
        password=influx.password(),
        timeout_s=influx.timeout_s,
    )
