"""Alerts POSTed as JSON to a webhook, with an optional bearer token.

Connection errors, 429 and 5xx are retried within the call, a few times with
backoff, then given up (`OutputError`); any other 4xx is logged, counted and
dropped: sending it again would be refused again.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from typing import Final

import urllib3

from cloud.outputs.delivery import OutputError, OutputStats
from runtime.backoff import Backoff
from runtime.config import read_secret
from runtime.influx_sinks.base import error_text, retry_after_seconds
from runtime.logs import kv
from wire.messages import Alert, encode

log = logging.getLogger(__name__)

WEBHOOK_TOKEN_ENV: Final = "TILLPULSE_WEBHOOK_TOKEN"
_TOO_MANY: Final = 429


class WebhookNotifier:
    """POSTs each alert as JSON to a URL, with an optional bearer token.

    Connection errors, 429 and 5xx are retried with backoff, within ``attempts``
    and a time budget per call; when the endpoint stays down the rest of the
    call's alerts are not tried (`OutputError`). Any other answer (4xx) is
    logged, counted and dropped.
    """

    def __init__(
        self,
        url: str,
        *,
        token_file: str | None = None,
        timeout_s: float = 5.0,
        attempts: int = 3,
        retry_initial_s: float = 0.5,
        retry_max_s: float = 5.0,
        budget_s: float = 30.0,
    ) -> None:
        parsed = urllib3.util.parse_url(url)
        self.target = f"webhook {parsed.scheme}://{parsed.netloc}{parsed.path or ''}"  # no query
        self.stats = OutputStats()
        self._url = url
        self._headers = {"Content-Type": "application/json"}
        if token_file is not None or os.environ.get(WEBHOOK_TOKEN_ENV):
            self._headers["Authorization"] = f"Bearer {read_secret(token_file, WEBHOOK_TOKEN_ENV)}"
        self._attempts = attempts
        self._retry = (retry_initial_s, retry_max_s)
        self._budget_s = budget_s
        self._http = urllib3.PoolManager(
            num_pools=1, retries=False, timeout=urllib3.Timeout(total=timeout_s)
        )

    def send(self, alerts: Sequence[Alert]) -> int:
        """POST every alert; returns how many the endpoint accepted (2xx)."""
        deadline = time.monotonic() + self._budget_s
        delivered = 0
        for index, alert in enumerate(alerts):
            try:
                delivered += self._post(alert, deadline)
            except OutputError as exc:
                self.stats.failures += 1
                raise OutputError(f"{exc}; {len(alerts) - index} alerts not sent") from None
        return delivered

    def _post(self, alert: Alert, deadline: float) -> bool:
        """True: accepted; False: refused for good. Raises OutputError: endpoint down."""
        backoff = Backoff(*self._retry, retry_after_max_s=self._retry[1])
        body = encode(alert)
        while True:
            retry_after: float | None = None
            try:
                response = self._http.request("POST", self._url, body=body, headers=self._headers)
            except urllib3.exceptions.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if 200 <= response.status < 300:
                    self.stats.delivered += 1
                    return True
                problem = f"HTTP {response.status}: {error_text(response.data)[:200]}"
                if response.status != _TOO_MANY and response.status < 500:
                    self.stats.refused += 1
                    log.error(
                        "webhook_refused",
                        extra=kv(target=self.target, alert_id=alert.alert_id, error=problem),
                    )
                    return False
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
            delay = backoff.next_delay(retry_after)
            if backoff.attempt >= self._attempts or time.monotonic() + delay > deadline:
                raise OutputError(
                    f"{self.target}: alert {alert.alert_id} not delivered after "
                    f"{backoff.attempt} attempts: {problem}"
                )
            log.warning(
                "webhook_retry",
                extra=kv(target=self.target, attempt=backoff.attempt, delay_s=delay, error=problem),
            )
            time.sleep(delay)

    def close(self) -> None:
        self._http.clear()
