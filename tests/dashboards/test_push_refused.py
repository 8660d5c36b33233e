"""`tillpulse dashboards push` run as an operator runs it, against a Grafana that refuses
its credentials and against a port where nothing listens: one line naming the address and
the config's key, exit 1 (README.md, "Command line").

Grafana cannot be installed here (not packaged for Debian; docs/architecture.md), so for
this error path only a small local HTTP server answers as Grafana's HTTP API does: an
unauthenticated /api/health with its version, 401 to a token it does not know and 403 to
a token without the Admin role, with Grafana's JSON error bodies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runtime.cli import EXIT_FAILED
from testkit.servers import free_port
from tests.operator_errors import assert_one_line, call_tillpulse, run_tillpulse

pytestmark = pytest.mark.operator_error

TOKEN = "glsa_not_what_grafana_issued"
REFUSALS = {
    401: {"message": "invalid API key"},
    403: {
        "accessErrorId": "ACE0000000001",
        "message": "You'll need additional permissions to perform this action. "
        "Permissions needed: folders:read",
        "title": "Access denied",
    },
}


def grafana_api(status: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/api/health":  # Grafana answers it without credentials
                self._answer(200, {"commit": "test", "database": "ok", "version": "10.4.2"})
            else:
                self._answer(status, REFUSALS[status])

        do_POST = do_PUT = do_GET

        def _answer(self, code: int, body: dict[str, str]) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # quiet in the test output
            pass

    return Handler


@contextmanager
def refusing_grafana(status: int) -> Iterator[str]:
    """The URL of a server answering as a Grafana that refuses with ``status``."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), grafana_api(status))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def config(tmp_path: Path, url: str) -> Path:
    token = tmp_path / "grafana-token"
    token.write_text(TOKEN + "\n")
    path = tmp_path / "dashboards.toml"
    path.write_text(
        f'[grafana]\nurl = "{url}"\ntoken_file = "{token}"\n'
        '[datasource]\nurl = "http://influxdb:8086"\ndatabase = "tillpulse"\n'
    )
    return path


@pytest.mark.parametrize(
    ("status", "as_a_process"),
    [(401, True), (403, False)],  # the console script once; in this process, cheaper, once
    ids=["unknown-token", "token-not-admin"],
)
def test_refused_credentials_are_one_line_naming_grafana_and_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], status: int, as_a_process: bool
) -> None:
    with refusing_grafana(status) as url:
        args = ("dashboards", "push", "--config", str(config(tmp_path, url)))
        result = run_tillpulse(*args) if as_a_process else call_tillpulse(capsys, *args)
    line = assert_one_line(
        result, EXIT_FAILED, url, f"refused the credentials (HTTP {status})", "[grafana]"
    )
    assert TOKEN not in line and result.out == ""


def test_push_to_a_closed_port_is_one_line_naming_the_address(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_tillpulse("dashboards", "push", "--config", str(config(tmp_path, url)))
    line = assert_one_line(result, EXIT_FAILED, url, "[grafana] url")
    assert TOKEN not in line and result.out == ""
