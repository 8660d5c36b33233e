"""The ``v2`` dialect (default): influxdb-client's synchronous WriteApi, token/org/bucket.

Works with InfluxDB 2.x, 3.x, Cloud and 1.8+ (``/api/v2/write``). The lines
are handed over already encoded (bytes), so the client only joins and posts
them; its own retries are off (``retries=False``): `LineSink` classifies and
the forwarder retries.
"""

from __future__ import annotations

import urllib3
from influxdb_client import InfluxDBClient, WritePrecision  # type: ignore[attr-defined]
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from runtime.influx_sinks.base import LineSink, Reply, error_text, unreachable
from runtime.influx_sinks.errors import SinkRetriableError


class V2Sink(LineSink):
    def __init__(
        self, url: str, *, token: str, org: str, bucket: str, timeout_s: float = 10.0
    ) -> None:
        self.name = f"influxdb-v2 {url.rstrip('/')} org={org} bucket={bucket}"
        self._org = org
        self._bucket = bucket
        self._url = url
        self._client = InfluxDBClient(
            url=url, token=token, org=org, timeout=int(timeout_s * 1000), retries=False
        )
        self._api = self._client.write_api(write_options=SYNCHRONOUS)

    def _post(self, body: bytes) -> Reply:
        try:
            self._api.write(
                bucket=self._bucket,
                org=self._org,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]
            )
        except ApiException as exc:
            if not exc.status:  # raised without an HTTP answer
                raise SinkRetriableError(f"{self.name}: {exc.reason}") from exc
            retry_after: str | None = exc.headers.get("Retry-After") if exc.headers else None
            return Reply(exc.status, error_text(exc.body), retry_after)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise SinkRetriableError(f"{self.name}: {unreachable(self._url, exc)}") from exc
        return Reply(204, "")

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]
        self._client.close()  # type: ignore[no-untyped-call]
