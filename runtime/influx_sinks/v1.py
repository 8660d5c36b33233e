"""The ``v1`` dialect: ``POST /write?db=&rp=&precision=ns`` with user/password (urllib3).

Works with every InfluxDB 1.x (and the 1.x compatibility API of 2.x/3.x).
"""

from __future__ import annotations

import urllib.parse

import urllib3

from runtime.influx_sinks.base import LineSink, Reply, error_text, unreachable
from runtime.influx_sinks.errors import SinkRetriableError


class V1Sink(LineSink):
    def __init__(
        self,
        url: str,
        database: str,
        *,
        retention_policy: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        params = {"db": database, "precision": "ns"}
        if retention_policy:
            params["rp"] = retention_policy
        base = url.rstrip("/")
        self.name = f"influxdb-v1 {base} db={database}"
        self._url = f"{base}/write?{urllib.parse.urlencode(params)}"
        self._headers = {"Content-Type": "text/plain; charset=utf-8"}
        if username is not None:
            self._headers.update(urllib3.make_headers(basic_auth=f"{username}:{password or ''}"))
        self._http = urllib3.PoolManager(
            num_pools=1, retries=False, timeout=urllib3.Timeout(total=timeout_s)
        )

    def _post(self, body: bytes) -> Reply:
        try:
            response = self._http.request("POST", self._url, body=body, headers=self._headers)
        except urllib3.exceptions.HTTPError as exc:
            raise SinkRetriableError(f"{self.name}: {unreachable(self._url, exc)}") from exc
        return Reply(
            response.status, error_text(response.data), response.headers.get("Retry-After")
        )

    def close(self) -> None:
        self._http.clear()
