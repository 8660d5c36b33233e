"""InfluxDB sinks: pre-encoded line protocol in, a classified `WriteResult` out.

`V2Sink` (default dialect: token/org/bucket through influxdb-client; InfluxDB
2.x, 3.x, Cloud, 1.8+) and `V1Sink` (``/write?db=&rp=`` with user/password;
every InfluxDB 1.x) share `LineSink`, which owns the answer handling.
"""

from gateway.sinks.base import LineSink, Rejected, WriteResult, retry_after_seconds
from gateway.sinks.v1 import V1Sink
from gateway.sinks.v2 import V2Sink

__all__ = ["LineSink", "Rejected", "V1Sink", "V2Sink", "WriteResult", "retry_after_seconds"]
