"""A module the agent defers (`edge.unused_imports`) is absent until used, then whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# A fresh interpreter without site (this venv's .pth files import modules of their own).
SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path[:0] = {path!r}
    from edge.unused_imports import load_on_first_use
    load_on_first_use()
    import paho.mqtt.client as mqtt
    print("http.client" in sys.modules, "email.message" in sys.modules)
    import urllib.request
    proxies = urllib.request.getproxies()
    print(type(urllib.request).__name__, type(proxies).__name__, "http.client" in sys.modules)
    print(mqtt.urllib.request.proxy_bypass("127.0.0.1") is not None, urllib.request.Request)
    """
)


def test_paho_imports_without_urllib_request_and_uses_it_whole_when_asked() -> None:
    script = SCRIPT.format(path=[p for p in sys.path if p])
    done = subprocess.run(
        [sys.executable, "-S", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "no_proxy": "127.0.0.1"},
    )
    assert done.returncode == 0, done.stderr
    before, after, proxy = done.stdout.splitlines()
    assert before == "False False"  # paho imported, urllib.request's imports not run
    assert after == "module dict True"  # an ordinary module once used
    assert proxy == "True <class 'urllib.request.Request'>"
