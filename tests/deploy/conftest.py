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
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.cli import main as broker_cli
from gateway.config import load_gateway_config
from testkit.servers import ManagedServer, MosquittoServer, free_port, wait_until
from wire.topics import device_subscription, device_topic

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
MOSQUITTO_DIR = DEPLOY / "mosquitto"
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

# The broker's listeners in deploy/mosquitto/mosquitto.conf (8883: tls-listener.conf,
# included only when the certificates exist)
DEVICE_LISTENER = 1883
TLS_LISTENER = 8883
HEALTH_LISTENER = 1880
INCLUDE_DIR = re.compile(r"^include_dir (\S+)$", re.MULTILINE)


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
    the compose file maps rewritten: the listeners to free ports on 127.0.0.1,
    /mosquitto/config to deploy/mosquitto, /mosquitto/passwd, /mosquitto/data and
    /mosquitto/conf.d and /mosquitto/certs to the test's directories (and ``user root``
    when the tests run as root: see MosquittoServer). The included directory's files
    (what entrypoint.sh put there) are inlined, so their listeners get free ports too.
    ``port`` is the device listener's."""

    def __init__(self, workdir: Path, **kwargs: Any) -> None:
        super().__init__(workdir, **kwargs)
        self.tls_port = free_port()
        self.health_port = free_port()
        self.passwd_dir = self.workdir / "passwd"
        self.certs_dir = self.workdir / "certs"
        self.secrets_dir = self.workdir / "secrets"  # the agents' passwords (provision)
        self.include_dir = self.workdir / "conf.d"
        self.healthcheck_config_dir = self.workdir / "healthcheck"  # XDG_CONFIG_HOME
        self.listeners: set[int] = set()  # of the config it last ran, as committed

    @property
    def passwd_file(self) -> Path:
        return self.passwd_dir / "passwd"

    def _reassign_ports(self) -> None:
        super()._reassign_ports()
        self.tls_port = free_port()
        self.health_port = free_port()

    def config_text(self) -> str:
        ports = {
            DEVICE_LISTENER: self.port,
            TLS_LISTENER: self.tls_port,
            HEALTH_LISTENER: self.health_port,
        }
        text = INCLUDE_DIR.sub(self._included, (MOSQUITTO_DIR / "mosquitto.conf").read_text())
        self.listeners = set()

        def listener(match: re.Match[str]) -> str:
            self.listeners.add(int(match.group(1)))
            return f"listener {ports[int(match.group(1))]} {self.host}"

        text = re.sub(r"^listener (\d+)\b.*$", listener, text, flags=re.MULTILINE)
        text = (
            text.replace("/mosquitto/config/", f"{MOSQUITTO_DIR}/")
            .replace("/mosquitto/passwd/", f"{self.passwd_dir}/")
            .replace("/mosquitto/data/", f"{self.data_dir}/")
            .replace("/mosquitto/certs/", f"{self.certs_dir}/")
        )
        settings = [line for line in text.splitlines() if not line.startswith("#")]
        left = [line for line in settings if re.search(r"\s/mosquitto/", line)]
        assert not left, f"container paths left in the broker config: {left}"
        if os.geteuid() == 0:
            text += "\nuser root\n"
        return text

    def _included(self, match: re.Match[str]) -> str:
        """An include_dir line as the broker reads it: its *.conf files, sorted."""
        assert match.group(1) == "/mosquitto/conf.d", f"unexpected include: {match.group(0)}"
        return "\n".join(f.read_text() for f in sorted(self.include_dir.glob("*.conf")))


def run_entrypoint(broker: DeployBroker, environ: Mapping[str, str]) -> None:
    """Run deploy/mosquitto/entrypoint.sh as the container does, then `true` instead of
    the broker: it (re)writes the service accounts of the broker's password files and
    the healthcheck's client config, seeds the ACL, and fills the included listeners'
    directory."""
    env = {
        "PATH": os.environ["PATH"],
        "MQTT_PASSWD_DIR": str(broker.passwd_dir),
        "MQTT_DATA_DIR": str(broker.data_dir),
        "MQTT_INCLUDE_DIR": str(broker.include_dir),
        "MQTT_CERTS_DIR": str(broker.certs_dir),
        "XDG_CONFIG_HOME": str(broker.healthcheck_config_dir),
        **environ,
    }
    subprocess.run(
        ["sh", str(MOSQUITTO_DIR / "entrypoint.sh"), "true"],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    )


def provision_agents(broker: DeployBroker, registry: Path) -> None:
    """What docs/operations.md says to do for new agents: `tillpulse broker provision`,
    here without a reload (the caller starts or reloads the broker)."""
    provision = ["provision", "--registry", str(registry), "--broker-dir", str(broker.passwd_dir)]
    assert broker_cli([*provision, "--secrets-dir", str(broker.secrets_dir)]) == 0


def agent_password(broker: DeployBroker, agent: str) -> str:
    """The password provision wrote for ``agent`` (for its field engineer)."""
    return (broker.secrets_dir / f"{agent}.password").read_text().strip()


# Accounts of the test broker: the service accounts come from the environment
# through entrypoint.sh (as docker-compose.yml passes them), the agents are provisioned
# from a registry as docs/operations.md says: two single-terminal agents at SITE (an
# agent's own id is a device id).
SERVICE_PASSWORDS = {"gw1": "gw1-secret-1", "gw2": "gw2-secret-1", "cloud": "cloud-secret-1"}
HEALTH_PASSWORD = "health-secret-1"
ACCOUNTS = {
    "MQTT_SERVICE_ACCOUNTS": " ".join(SERVICE_PASSWORDS),
    **{f"MQTT_{name.upper()}_PASSWORD": pw for name, pw in SERVICE_PASSWORDS.items()},
    "MQTT_HEALTH_PASSWORD": HEALTH_PASSWORD,
}
DEVICES = ("s0001-pos1", "s0001-pos2")
SITE = "s0001"
REGISTRY = (
    f'[[site]]\nid = "{SITE}"\nname = "test site"\n'
    + "".join(f'\n[[agent]]\nid = "{device}"\nsite = "{SITE}"\n' for device in DEVICES)
    + f"\n{(DEPLOY / 'registry.toml').read_text()}"
)


def start_deploy_broker(workdir: Path, started: list[ManagedServer]) -> DeployBroker:
    """The committed broker config on a real Mosquitto, with the service accounts and
    two agents provisioned."""
    MosquittoServer.binary_path()
    broker = DeployBroker(workdir)
    run_entrypoint(broker, ACCOUNTS)
    registry = workdir / "registry.toml"
    registry.write_text(REGISTRY)
    provision_agents(broker, registry)
    started.append(broker)  # stopped at teardown, log tail in a failure report
    return broker.start()


@pytest.fixture
def deploy_broker(tmp_path: Path, _started_servers: list[ManagedServer]) -> DeployBroker:
    """The broker as the stack runs it."""
    return start_deploy_broker(tmp_path / "broker", _started_servers)


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
        clean_start: bool = True,
        session_expiry_s: int = 0,
        ca_file: Path | None = None,
    ) -> None:
        self.client_id = client_id or f"t-{uuid.uuid4().hex[:10]}"
        self.connack: ReasonCode | None = None
        self.session_present: bool | None = None
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
        if ca_file is not None:  # TLS, the server verified against this CA
            self._client.tls_set(ca_certs=str(ca_file))
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_publish = self._on_publish
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        properties = Properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = session_expiry_s
        self._client.connect(
            "127.0.0.1", port, keepalive=10, clean_start=clean_start, properties=properties
        )
        self._client.loop_start()
        wait_until(lambda: self.connack is not None, 10, message="no CONNACK")

    def _on_connect(
        self, c: mqtt.Client, u: Any, flags: mqtt.ConnectFlags, rc: ReasonCode, p: Any
    ) -> None:
        self.session_present = flags.session_present
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

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1; the PUBACK's reason code."""
        info = self._client.publish(topic, payload, qos=1, retain=retain)
        wait_until(lambda: info.mid in self.pubacks, 10, message=f"no PUBACK for {topic}")
        return self.pubacks[info.mid]

    def send(self, topic: str, payload: bytes) -> None:
        """Publish at QoS 1 and return at once (paho sends it whatever the broker's limits)."""
        self._client.publish(topic, payload, qos=1)

    def publish_all(self, topic: str, payloads: list[bytes]) -> list[ReasonCode]:
        """Publish each at QoS 1 without waiting in between; their PUBACKs' reason codes."""
        mids = [self._client.publish(topic, payload, qos=1).mid for payload in payloads]
        wait_until(
            lambda: all(mid in self.pubacks for mid in mids),
            30,
            message=lambda: f"{sum(mid in self.pubacks for mid in mids)} of {len(mids)} PUBACKs",
        )
        return [self.pubacks[mid] for mid in mids]

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


NOT_AUTHORIZED = 135  # MQTT v5 reason code, in CONNACK, SUBACK and PUBACK


def gateway_client(
    broker: DeployBroker,
    clients: list[Client],
    *,
    clean_start: bool = True,
    session_expiry_s: int = 0,
) -> Client:
    """A gateway as deploy/gateway.toml makes it: account and client id "gw1", and
    its share of the shared subscription (subscribed unless it resumes a session)."""
    config = load_gateway_config(DEPLOY / "gateway.toml")
    assert config.mqtt.username is not None
    gateway = Client(
        broker.port,
        username=config.mqtt.username,
        password=SERVICE_PASSWORDS[config.mqtt.username],
        client_id=config.gateway.id,  # as gateway/service.py connects
        clean_start=clean_start,
        session_expiry_s=session_expiry_s,
    )
    clients.append(gateway)
    assert gateway.connected, gateway.connack
    if not gateway.session_present:
        granted = gateway.subscribe(device_subscription(config.mqtt.shared_group))
        assert granted.value == 1, f"shared subscription refused: {granted}"
    return gateway


def device_client(
    broker: DeployBroker, clients: list[Client], device: str, **options: Any
) -> Client:
    """A device with its own account (a single-terminal agent's); ``client_id`` and the
    session in ``options``."""
    options.setdefault("client_id", device)
    client = Client(
        broker.port, username=device, password=agent_password(broker, device), **options
    )
    clients.append(client)
    assert client.connected, client.connack
    return client


def reads_nothing(reader: Client, writer: Client, topic: str, gateway: Client) -> bool:
    """Whether ``reader`` (subscribed to every device topic) misses ``writer``'s message.

    Sync points: the gateway has it, so the broker has routed it; then the reader's own
    publish is acknowledged (or refused), and the broker sends one client's packets in
    order, so a delivery to the reader would have come before that PUBACK."""
    writer.publish(topic, b"not for you")
    wait_until(lambda: (topic, b"not for you") in gateway.received(), 10, message="not routed")
    reader.publish(device_topic(SITE, reader.client_id, "health"), b"sync")
    return reader.received() == []


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


# ------------------------------------------------------ the simulated fleet's broker

SIM_BROKER_CONFIG = DEPLOY / "mosquitto-sim" / "mosquitto.conf"


class FleetBroker(MosquittoServer):
    """Mosquitto running deploy/mosquitto-sim/mosquitto.conf (the simulated fleet's own
    broker, service mosquitto-sim) as committed, with only its listener moved to a free
    port on 127.0.0.1 (and ``user root`` when the tests run as root: see
    MosquittoServer)."""

    def config_text(self) -> str:
        text, moved = re.subn(
            r"^listener 1883$",
            f"listener {self.port} {self.host}",
            SIM_BROKER_CONFIG.read_text(),
            flags=re.MULTILINE,
        )
        assert moved == 1, f"{SIM_BROKER_CONFIG}: not one `listener 1883`"
        if os.geteuid() == 0:
            text += "\nuser root\n"
        return text


@pytest.fixture
def fleet_broker(tmp_path: Path, _started_servers: list[ManagedServer]) -> FleetBroker:
    """The simulated fleet's broker (profile "sim") on a real Mosquitto."""
    MosquittoServer.binary_path()
    broker = FleetBroker(tmp_path / "fleet-broker")
    _started_servers.append(broker)  # stopped at teardown, log tail in a failure report
    return broker.start()


# ------------------------------------------------------------------- the preflight

PREFLIGHT_SCRIPT = DEPLOY / "preflight" / "check-env.sh"


def run_preflight(service: dict[str, Any], workdir: Path) -> subprocess.CompletedProcess[str]:
    """The preflight script as the resolved compose service ``service`` runs it: its
    environment, and its TLS mounts (/tls/...) as symlinks to their host directories."""
    tls_root = workdir / "tls"
    tls_root.mkdir(parents=True, exist_ok=True)
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if target.startswith("/tls/"):
            (tls_root / target.removeprefix("/tls/")).symlink_to(source)
    return subprocess.run(
        ["sh", str(PREFLIGHT_SCRIPT)],
        env={
            "PATH": os.environ["PATH"],
            "PREFLIGHT_TLS_ROOT": str(tls_root),
            **service.get("environment", {}),
        },
        check=False,  # the callers assert on the exit code and the lines
        capture_output=True,
        text=True,
        timeout=30,
    )
