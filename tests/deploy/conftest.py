"""Fixtures for the docker-compose stack's files: the committed broker config run by a
real Mosquitto, and the compose file as docker-compose resolves it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.servers import ManagedServer, MosquittoServer, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MOSQUITTO_DIR = DEPLOY / "mosquitto"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

# The broker's listeners in deploy/mosquitto/mosquitto.conf
DEVICE_LISTENER = 1883
SIM_LISTENER = 1884
HEALTH_LISTENER = 1880


def env_example() -> dict[str, str]:
    """NAME=value lines of .env.example (comments and blank lines skipped)."""
    pairs = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, sep, value = line.partition("=")
            assert sep, f".env.example: not NAME=value: {line!r}"
            pairs[name.strip()] = value.strip()
    return pairs


# ------------------------------------------------------------------------ the broker


class DeployBroker(MosquittoServer):
    """Mosquitto running deploy/mosquitto/mosquitto.conf as committed, with only what
    the compose file maps rewritten: the three listeners to free ports on 127.0.0.1,
    /mosquitto/config to deploy/mosquitto, /mosquitto/passwd and /mosquitto/data to
    the test's directories (and ``user root`` when the tests run as root: see
    MosquittoServer). ``port`` is the device listener's."""

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.sim_port = free_port()
        self.health_port = free_port()
        self.passwd_dir = self.workdir / "passwd"

    @property
    def passwd_file(self) -> Path:
        return self.passwd_dir / "passwd"

    def _reassign_ports(self) -> None:
        super()._reassign_ports()
        self.sim_port = free_port()
        self.health_port = free_port()

    def config_text(self) -> str:
        ports = {
            DEVICE_LISTENER: self.port,
            SIM_LISTENER: self.sim_port,
            HEALTH_LISTENER: self.health_port,
        }
        text = (MOSQUITTO_DIR / "mosquitto.conf").read_text()
        text, listeners = re.subn(
            r"^listener (\d+)\b.*$",
            lambda m: f"listener {ports[int(m.group(1))]} {self.host}",
            text,
            flags=re.MULTILINE,
        )
        assert listeners == len(ports), f"expected {len(ports)} listeners, found {listeners}"
        text = (
            text.replace("/mosquitto/config/", f"{MOSQUITTO_DIR}/")
            .replace("/mosquitto/passwd/", f"{self.passwd_dir}/")
            .replace("/mosquitto/data/", f"{self.data_dir}/")
        )
        settings = [line for line in text.splitlines() if not line.startswith("#")]
        left = [line for line in settings if re.search(r"\s/mosquitto/", line)]
        assert not left, f"container paths left in the broker config: {left}"
        if os.geteuid() == 0:
            text += "\nuser root\n"
        return text


def run_entrypoint(broker: DeployBroker, environ: Mapping[str, str]) -> None:
    """Run deploy/mosquitto/entrypoint.sh as the container does, then `true` instead of
    the broker: it (re)writes the service accounts of the broker's password file."""
    env = {
        "PATH": os.environ["PATH"],
        "MQTT_PASSWORD_FILE": str(broker.passwd_file),
        "MQTT_DATA_DIR": str(broker.data_dir),
        **environ,
    }
    broker.data_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "entrypoint.sh"), "true"],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )


def add_device(broker: DeployBroker, device: str, password: str) -> None:
    """What docs/operations.md says to do for a new terminal: mosquitto_passwd -b."""
    broker.passwd_dir.mkdir(parents=True, exist_ok=True)
    mosquitto_passwd = shutil.which("mosquitto_passwd")
    if mosquitto_passwd is None:
        pytest.fail("mosquitto_passwd not found: apt-get install mosquitto", pytrace=False)
    broker.passwd_file.touch()
    subprocess.run(
        [mosquitto_passwd, "-b", str(broker.passwd_file), device, password],
        check=True,
        capture_output=True,
        timeout=30,
    )


# Accounts of the test broker: the service accounts come from the environment
# through entrypoint.sh, the devices are added as docs/operations.md says.
ACCOUNTS = {"MQTT_GATEWAY_PASSWORD": "gw-secret-1", "MQTT_CLOUD_PASSWORD": "cloud-secret-1"}
DEVICES = {"s0001-pos1": "pos1-secret", "s0001-pos2": "pos2-secret"}


@pytest.fixture
def deploy_broker(tmp_path: Path, _started_servers: list[ManagedServer]) -> DeployBroker:
    """The committed broker config on a real Mosquitto, with two devices and the
    service accounts in its password file."""
    MosquittoServer.binary_path()
    broker = DeployBroker(tmp_path / "broker")
    for device, password in DEVICES.items():
        add_device(broker, device, password)
    run_entrypoint(broker, ACCOUNTS)
    _started_servers.append(broker)  # stopped at teardown, log tail in a failure report
    return broker.start()


# --------------------------------------------------------------------- MQTT clients


class Client:
    """An MQTT v5 client that records what the broker answered: CONNACK, SUBACK and
    PUBACK reason codes, and the messages that arrived."""

    def __init__(
        self,
        port: int,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
    ) -> None:
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.connack: ReasonCode | None = None
        self.subacks: dict[int, list[ReasonCode]] = {}
        self.pubacks: dict[int, ReasonCode] = {}
        self.messages: list[tuple[str, bytes]] = []
        self.disconnects = 0
        self._lock = threading.Lock()
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=mqtt.MQTTv5
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.connect("127.0.0.1", port, keepalive=10)
        self._client.loop_start()
        wait_until(lambda: self.connack is not None, 10, message="no CONNACK")

    def _on_connect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        self.connack = rc

    def _on_subscribe(
        self, c: mqtt.Client, u: Any, mid: int, rcs: list[ReasonCode], p: Any
    ) -> None:
        with self._lock:
            self.subacks[mid] = rcs

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        with self._lock:
            self.pubacks[mid] = rc

    def _on_disconnect(self, c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        with self._lock:
            self.disconnects += 1

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    @property
    def connected(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def subscribe(self, topic_filter: str) -> ReasonCode:
        """Subscribe at QoS 1; the SUBACK's reason code (granted QoS, or a refusal)."""
        _, mid = self._client.subscribe(topic_filter, qos=1)
        assert mid is not None, f"subscribe {topic_filter} failed"
        wait_until(lambda: mid in self.subacks, 10, message=f"no SUBACK for {topic_filter}")
        return self.subacks[mid][0]

    def publish(self, topic: str, payload: bytes) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self._client.publish(topic, payload, qos=1)
        wait_until(lambda: info.mid in self.pubacks, 10, message=f"no PUBACK for {topic}")
        return self.pubacks[info.mid]

    def received(self) -> list[tuple[str, bytes]]:
        with self._lock:
            return list(self.messages)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    """Clients a test opened (append them); all closed at teardown."""
    opened: list[Client] = []
    yield opened
    for client in opened:
        client.close()


# -------------------------------------------------------------------- docker-compose


def compose_binary() -> str:
    """docker-compose, or the test is skipped (.ci/run installs Debian's package)."""
    found = shutil.which("docker-compose")
    if found is None:
        pytest.skip(
            "docker-compose is not installed (apt-get install docker-compose; .ci/run does)"
        )
    return found


def run_compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose with only ``env_file`` as the variables' source (a clean
    environment, so nothing of the caller's leaks in)."""
    return subprocess.run(
        [compose_binary(), "--file", str(COMPOSE_FILE), "--env-file", str(env_file), *args],
        env={"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")},
        check=False,  # the callers assert on the exit code and stderr
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def read_yaml(text: str) -> Any:
    """YAML text as Python objects, read by the YAML parser of docker-compose's own
    Python (Debian's docker-compose is a Python program depending on python3-yaml),
    so the test suite needs no YAML library of its own."""
    binary = compose_binary()
    shebang = Path(binary).read_bytes()[:200].split(b"\n", 1)[0]
    if not shebang.startswith(b"#!") or b"python" not in shebang:
        pytest.skip(f"{binary} is not a Python script: its YAML parser reads YAML here")
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    converted = subprocess.run(
        [*shebang[2:].decode().split(), "-c", to_json],
        input=text,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(converted.stdout)


@pytest.fixture(scope="session")
def resolved_compose() -> dict[str, Any]:
    """The compose file as docker-compose resolves it with .env.example."""
    done = run_compose(ENV_EXAMPLE, "config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = read_yaml(done.stdout)
    return resolved
