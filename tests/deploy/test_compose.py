"""docker-compose.yml as docker-compose resolves it: valid with .env.example, clear
about missing secrets, refusing to start insecurely (its preflight), the simulated
fleet apart from the real pipeline, and consistent with the files it mounts (the
services' TOML configs, the broker's accounts, Grafana's provisioning). No Docker
engine needed: the preflight script and the simulated fleet's broker run here."""

from __future__ import annotations

import re
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cloud.config import CloudConfig
from gateway.config import GatewayConfig
from runtime.config import load_config
from testkit.servers import wait_until
from tests.deploy.conftest import (
    COMPOSE_FILE,
    DEPLOY,
    ENV_EXAMPLE,
    MOSQUITTO_DIR,
    REPO,
    Client,
    FleetBroker,
    env_example,
    read_yaml,
    run_compose,
    run_preflight,
)
from wire.incidents import AlertType
from wire.topics import device_subscription, device_topic

VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
REQUIRED = sorted(
    {m.group(1) for m in VARIABLE.finditer(COMPOSE_FILE.read_text()) if "?" in (m.group(2) or "")}
)
SECRETS = [name for name in REQUIRED if name != "TILLPULSE_ALERT_WEBHOOK_URL"]
GATEWAYS = ("gateway-1", "gateway-2")
SIMULATION = {"mosquitto-sim", "gateway-sim", "cloud-sim", "fleet"}  # profile "sim"
GENERATE = "openssl rand -hex 24"


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (a host path or a volume name) of a resolved service."""
    pairs = (volume.split(":")[:2] for volume in service.get("volumes", []))
    return {target: source for source, target in pairs}


def mounted_config(service: dict[str, Any]) -> tuple[Path, str]:
    """The repo file mounted as the service's TOML config, and its path in the container."""
    (target, source), *others = [(t, s) for t, s in mounts(service).items() if t.endswith(".toml")]
    assert not others, f"more than one TOML mounted: {mounts(service)}"
    return Path(source), target


def broker_account(resolved: dict[str, Any], username: str | None) -> str:
    """The password the broker's entrypoint.sh gives the service account ``username``,
    which must be one of MQTT_SERVICE_ACCOUNTS and have a block in its ACL."""
    broker = resolved["services"]["mosquitto"]["environment"]
    assert username in broker["MQTT_SERVICE_ACCOUNTS"].split(), username
    acl = (MOSQUITTO_DIR / "acl").read_text().splitlines()
    assert f"user {username}" in acl, f"no ACL block for {username}"
    password: str = broker[f"MQTT_{username.upper().replace('-', '_')}_PASSWORD"]
    return password


def resolve(tmp_path: Path, **settings: str) -> dict[str, Any]:
    """The compose file resolved with .env.example, secrets replaced by good ones
    (``openssl rand -hex 24`` alike) and then ``settings`` applied."""
    values = {**env_example(), **{name: secrets.token_hex(24) for name in SECRETS}, **settings}
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{key}={value}\n" for key, value in values.items()))
    done = run_compose(env_file, "config")
    assert done.returncode == 0, done.stderr
    resolved: dict[str, Any] = read_yaml(done.stdout)
    return resolved


def preflight(tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """The preflight as the stack runs it with these settings in .env."""
    service = resolve(tmp_path, **settings)["services"]["preflight"]
    return run_preflight(service, tmp_path / "preflight")


def published(service: dict[str, Any]) -> dict[str, str]:
    """Container port -> the host address it is published on."""
    pairs = (port.removesuffix("/tcp").rsplit(":", 2) for port in service.get("ports", []))
    return {container: host_ip for host_ip, _, container in pairs}


def load_service_config(
    service: dict[str, Any], schema: type[Any], component: str, monkeypatch: pytest.MonkeyPatch
) -> Any:
    """The service's TOML, validated as its process does with the service's environment:
    overrides (TILLPULSE_<COMPONENT>__...) and secrets (TILLPULSE_*_PASSWORD, ..._TOKEN)."""
    environment: dict[str, str] = service.get("environment", {})
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    source, target = mounted_config(service)
    assert source.is_relative_to(REPO / "deploy"), source
    launched = " ".join([*service.get("entrypoint", []), *service.get("command", [])])
    assert f"--config {target}" in launched, f"{target} is mounted, but runs: {launched}"
    return load_config(source, schema, component, environ=environment)


# ---------------------------------------------------------------- the file and .env


def test_the_compose_file_is_valid_with_the_variables_of_env_example() -> None:
    done = run_compose(ENV_EXAMPLE, "config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert "WARNING" not in done.stderr, done.stderr  # e.g. a variable that is not set


def test_env_example_has_every_variable_of_the_compose_file_and_no_other() -> None:
    used = {m.group(1) for m in VARIABLE.finditer(COMPOSE_FILE.read_text())}
    # COMPOSE_PROFILES: compose's own setting, which it reads from .env
    assert set(env_example()) == used | {"COMPOSE_PROFILES"}


def test_the_secrets_and_the_alert_webhook_are_required() -> None:
    assert REQUIRED == [
        "GRAFANA_ADMIN_PASSWORD",
        "INFLUX_ADMIN_PASSWORD",
        "INFLUX_TOKEN",
        "MQTT_CLOUD_PASSWORD",
        "MQTT_GW1_PASSWORD",
        "MQTT_GW2_PASSWORD",
        "MQTT_HEALTH_PASSWORD",
        "TILLPULSE_ALERT_WEBHOOK_URL",
    ]


@pytest.mark.parametrize("name", REQUIRED)
def test_a_missing_required_variable_stops_compose_with_its_name(name: str, tmp_path: Path) -> None:
    env_file = tmp_path / "env"
    env_file.write_text(
        "".join(f"{key}={value}\n" for key, value in env_example().items() if key != name)
    )
    done = run_compose(env_file, "config", "--quiet")
    assert done.returncode != 0
    assert f"set {name} in .env" in done.stderr, done.stderr


def test_every_long_running_service_has_a_healthcheck(resolved_compose: dict[str, Any]) -> None:
    services = resolved_compose["services"]
    assert {"mosquitto", "influxdb", "grafana", *GATEWAYS, "cloud", *SIMULATION} <= set(services)
    assert services["preflight"]["restart"] == "no"  # a one-shot: it exits, nothing to check
    unchecked = [
        name
        for name, service in services.items()
        if service.get("restart") != "no" and "test" not in service.get("healthcheck", {})
    ]
    assert unchecked == []


# ---------------------------------------------------------------------- the preflight


def test_every_service_starts_only_after_the_preflight_passed(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]
    waiting = {
        name: service.get("depends_on", {}).get("preflight", {}).get("condition")
        for name, service in services.items()
        if name != "preflight"
    }
    assert set(waiting.values()) == {"service_completed_successfully"}, waiting
    # it checks every secret, with the value each service gets
    assert set(SECRETS) <= set(services["preflight"]["environment"])


def test_the_preflight_refuses_the_example_secrets_naming_each(
    resolved_compose: dict[str, Any], tmp_path: Path
) -> None:
    done = run_preflight(resolved_compose["services"]["preflight"], tmp_path)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    for name in SECRETS:
        [line] = [line for line in lines if line.startswith(f"preflight: {name} ")]
        assert "example value" in line and line.endswith(GENERATE), line
    assert lines[-1] == f"preflight: {len(SECRETS)} problem(s) in .env: " + (
        "the stack does not start until they are fixed"
    )
    assert len(lines) == len(SECRETS) + 1, lines  # the default binds are fine
    # docs/operations.md ("Bring it up") shows this very output
    guide = (REPO / "docs" / "operations.md").read_text().splitlines()
    assert [line.strip() for line in guide if line.startswith("  preflight: ")] == lines


def test_the_preflight_passes_generated_secrets_and_the_default_binds(tmp_path: Path) -> None:
    done = preflight(tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


@pytest.mark.parametrize(
    ("setting", "value", "says"),
    [
        ("GRAFANA_ADMIN_PASSWORD", "", "is empty"),
        ("MQTT_HEALTH_PASSWORD", "0123456789abcde", "has 15 characters, fewer than 16"),
        ("INFLUX_ADMIN_PASSWORD", "s3cret-change-me-later", "is still the example value"),
    ],
    ids=["empty", "short", "change-me"],
)
def test_the_preflight_refuses_a_weak_secret_by_name(
    setting: str, value: str, says: str, tmp_path: Path
) -> None:
    # compose itself stops on an empty one (`:?`); the script refuses it too
    service = resolve(tmp_path)["services"]["preflight"]
    done = run_preflight(
        {**service, "environment": {**service["environment"], setting: value}}, tmp_path
    )
    assert done.returncode == 1
    [line, _] = done.stderr.splitlines()
    assert line.startswith(f"preflight: {setting} {says}") and line.endswith(GENERATE), line


def test_the_preflight_refuses_two_equal_secrets_naming_both(tmp_path: Path) -> None:
    shared = secrets.token_hex(24)
    done = preflight(tmp_path, INFLUX_TOKEN=shared, MQTT_CLOUD_PASSWORD=shared)
    assert done.returncode == 1
    [line, _] = done.stderr.splitlines()
    assert line.startswith("preflight: INFLUX_TOKEN is the same as MQTT_CLOUD_PASSWORD"), line


# ----------------------------------------------------------------- what is published


def test_by_default_only_mqtt_over_tls_is_published_beyond_the_loopback(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]
    exposed = {
        (name, container): host_ip
        for name, service in services.items()
        for container, host_ip in published(service).items()
        if host_ip != "127.0.0.1"
    }
    assert exposed == {("mosquitto", "8883"): "0.0.0.0"}
    assert published(services["mosquitto"])["1883"] == "127.0.0.1"
    assert published(services["grafana"])["3000"] == "127.0.0.1"
    # what the preflight checks is what compose publishes
    checked = services["preflight"]["environment"]
    assert checked["MQTT_BIND"] == "127.0.0.1" and checked["GRAFANA_BIND"] == "127.0.0.1"
    assert checked["GRAFANA_PROTOCOL"] == services["grafana"]["environment"]["GF_SERVER_PROTOCOL"]


@pytest.mark.parametrize(
    ("settings", "refused"),
    [
        ({"MQTT_BIND": "0.0.0.0"}, "MQTT_BIND=0.0.0.0 publishes plaintext MQTT"),
        ({"MQTT_BIND": "0.0.0.0", "MQTT_ALLOW_PLAINTEXT": "yes-i-know"}, None),
        ({"GRAFANA_BIND": "192.0.2.10"}, "GRAFANA_BIND=192.0.2.10 publishes Grafana over plain"),
        ({"GRAFANA_BIND": "0.0.0.0", "GRAFANA_ALLOW_PLAINTEXT": "yes-i-know"}, None),
        (
            {"GRAFANA_BIND": "0.0.0.0", "GRAFANA_PROTOCOL": "https"},
            "GRAFANA_PROTOCOL=https needs server.crt and server.key in GRAFANA_TLS_DIR"
            " (./deploy/no-tls), missing: server.crt server.key",
        ),
        (
            {"GRAFANA_BIND": "0.0.0.0", "GRAFANA_PROTOCOL": "https", "GRAFANA_TLS_DIR": "CERTS"},
            None,
        ),
        ({"MQTT_TLS_DIR": "CERTS"}, "MQTT_TLS_DIR=CERTS needs server.crt, server.key and ca.crt"),
    ],
    ids=[
        "mqtt-plaintext",
        "mqtt-plaintext-opted-in",
        "grafana-http",
        "grafana-http-opted-in",
        "grafana-https-without-certificate",
        "grafana-https",
        "mqtt-tls-without-ca",
    ],
)
def test_the_preflight_refuses_plaintext_beyond_the_loopback(
    settings: dict[str, str], refused: str | None, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"  # "CERTS": a directory with a server's certificate and key
    certs.mkdir()
    for name in ("server.crt", "server.key"):
        (certs / name).write_text("-----BEGIN PLACEHOLDER-----\n")
    settings = {key: value.replace("CERTS", str(certs)) for key, value in settings.items()}
    done = preflight(tmp_path, **settings)
    if refused is None:
        assert done.returncode == 0, done.stderr
        return
    assert done.returncode == 1
    [line, _] = done.stderr.splitlines()
    assert line.startswith(f"preflight: {refused.replace('CERTS', str(certs))}"), line


# -------------------------------------------------------------- the simulated fleet


def test_the_simulated_fleet_and_its_pipeline_run_only_with_the_profile_sim(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]
    assert {name for name, s in services.items() if s.get("profiles") == ["sim"]} == SIMULATION
    # what `docker-compose up` starts without the profile needs none of them
    needed = {
        dep for s in services.values() if "profiles" not in s for dep in s.get("depends_on", {})
    }
    assert needed & SIMULATION == set()


def test_the_simulated_fleet_cannot_reach_the_real_broker(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]
    fleet = services["fleet"]
    assert "--mqtt mosquitto-sim:1883" in " ".join(fleet["entrypoint"])
    # healthy: connected to that port (/proc/net/tcp spells it in hex)
    assert f":{1883:04X}'" in " ".join(fleet["healthcheck"]["test"])
    assert set(fleet["networks"]) == {"sim"}
    assert set(services["mosquitto-sim"]["networks"]) == {"sim"}
    assert resolved_compose["networks"]["sim"]["internal"] is True
    # the network "sim" has the simulation alone; the real broker is not on it
    on_sim = {name for name, s in services.items() if "sim" in s.get("networks", {})}
    assert on_sim == {"fleet", "mosquitto-sim", "gateway-sim"}
    assert "ports" not in services["mosquitto-sim"]


def test_the_simulated_fleets_points_go_to_its_own_bucket(
    resolved_compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = resolved_compose["services"]
    influxdb = services["influxdb"]["environment"]
    sim_bucket = influxdb["TILLPULSE_SIM_BUCKET"]
    assert sim_bucket == "tillpulse-sim" != influxdb["DOCKER_INFLUXDB_INIT_BUCKET"]

    gateway: GatewayConfig = load_service_config(
        services["gateway-sim"], GatewayConfig, "gateway", monkeypatch
    )
    assert (gateway.mqtt.host, gateway.mqtt.port) == ("mosquitto-sim", 1883)
    assert gateway.mqtt.username is None  # the fleet's broker is anonymous
    assert gateway.influxdb.bucket == sim_bucket
    assert gateway.influxdb.org == influxdb["DOCKER_INFLUXDB_INIT_ORG"]
    assert gateway.influxdb.token() == influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert mounts(services["gateway-sim"])[gateway.gateway.state_dir] == "gateway-sim-state"
    assert gateway.gateway.id not in {"gw1", "gw2"}
    healthz = f"http://127.0.0.1:{gateway.http.address[1]}/healthz"
    assert healthz in " ".join(services["gateway-sim"]["healthcheck"]["test"])

    cloud: CloudConfig = load_service_config(
        services["cloud-sim"], CloudConfig, "cloud", monkeypatch
    )
    assert cloud.influxdb is not None and cloud.influxdb.bucket == sim_bucket
    assert cloud.query.database == sim_bucket  # the DBRP mapping deploy/influxdb/dbrp.sh makes
    assert cloud.mqtt is None  # simulated alerts page nobody
    assert mounts(services["cloud-sim"])[cloud.cloud.state_dir] == "cloud-sim-state"
    memory = f"{cloud.cloud.state_dir}/shard-0-of-1/memory.json"
    assert memory in " ".join(services["cloud-sim"]["healthcheck"]["test"])

    init = mounts(services["influxdb"])["/docker-entrypoint-initdb.d/dbrp.sh"]
    assert Path(init) == DEPLOY / "influxdb" / "dbrp.sh"
    assert '--name "${TILLPULSE_SIM_BUCKET}"' in Path(init).read_text()


@pytest.mark.integration
def test_the_simulated_fleets_broker_carries_anonymous_devices_to_gateway_sim(
    fleet_broker: FleetBroker, clients: list[Client]
) -> None:
    gateway_config = load_config(DEPLOY / "gateway-sim.toml", GatewayConfig, "gateway")
    gateway = Client(fleet_broker.port, client_id=gateway_config.gateway.id)
    clients.append(gateway)
    assert gateway.connected, gateway.connack
    assert gateway.subscribe(device_subscription(gateway_config.mqtt.shared_group)).value == 1
    device = Client(fleet_broker.port, client_id="s0001-pos1")  # as `tillpulse sim fleet`
    clients.append(device)
    topic = device_topic("s0001", "s0001-pos1", "health")
    assert not device.publish(topic, b"simulated").is_failure
    wait_until(lambda: (topic, b"simulated") in gateway.received(), 10, message="not routed")


# -------------------------------------------------------- the services' TOML configs


def test_the_gateways_configs_validate_and_make_distinct_replicas(
    resolved_compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    services = resolved_compose["services"]
    influxdb = services["influxdb"]["environment"]
    configs: list[GatewayConfig] = []
    for name in GATEWAYS:
        config: GatewayConfig = load_service_config(
            services[name], GatewayConfig, "gateway", monkeypatch
        )
        # its own broker account, named after its id: the broker makes the client id
        # the username, so two replicas on one account would take each other's session
        assert config.mqtt.username == config.gateway.id, name
        assert config.mqtt.password() == broker_account(resolved_compose, config.mqtt.username)
        assert config.influxdb.token() == influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"], name
        assert config.influxdb.org == influxdb["DOCKER_INFLUXDB_INIT_ORG"], name
        assert config.influxdb.bucket == influxdb["DOCKER_INFLUXDB_INIT_BUCKET"], name
        assert config.mqtt.shared_group is not None, "the replicas must share the load"
        # its own spool: a volume of its own mounted at its state_dir
        assert mounts(services[name])[config.gateway.state_dir] == f"{name}-state"
        healthz = f"http://127.0.0.1:{config.http.address[1]}/healthz"
        assert healthz in " ".join(services[name]["healthcheck"]["test"]), name
        configs.append(config)
    assert len({c.gateway.id for c in configs}) == len(GATEWAYS), "gateway ids must differ"


def test_the_cloud_jobs_config_validates_with_its_secrets(
    resolved_compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = resolved_compose["services"]["cloud"]
    config: CloudConfig = load_service_config(service, CloudConfig, "cloud", monkeypatch)
    influxdb = resolved_compose["services"]["influxdb"]["environment"]
    assert config.mqtt is not None and config.influxdb is not None
    assert config.mqtt.client_id == config.mqtt.username  # what the broker makes it anyway
    assert config.mqtt.password() == broker_account(resolved_compose, config.mqtt.username)
    assert config.influxdb.token() == influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert config.influxdb.bucket == influxdb["DOCKER_INFLUXDB_INIT_BUCKET"]
    # InfluxQL reads the bucket through the DBRP mapping deploy/influxdb/dbrp.sh makes
    assert config.query.database == influxdb["DOCKER_INFLUXDB_INIT_BUCKET"]
    # [query] takes the same token from the environment
    assert config.query.reader_settings().token == influxdb["DOCKER_INFLUXDB_INIT_ADMIN_TOKEN"]
    assert mounts(service)[config.cloud.state_dir] == "cloud-state"
    # the healthcheck watches the state a detection cycle writes (one shard: 0 of 1)
    memory = f"{config.cloud.state_dir}/shard-0-of-1/memory.json"
    assert memory in " ".join(service["healthcheck"]["test"])


# --------------------------------------------------------------------------- Grafana


def grafana_variables(node: Any, key: str = "") -> set[str]:
    """The environment variables ($NAME, ${NAME}: upper case) Grafana expands in a
    provisioning document. Not variables: the query macros ($timeFilter, $__interval)
    and, in an alert rule's math "expression", its queries ($A)."""
    if isinstance(node, dict):
        return {name for k, v in node.items() for name in grafana_variables(v, k)}
    if isinstance(node, list):
        return {name for item in node for name in grafana_variables(item, key)}
    if isinstance(node, str) and key != "expression":
        return set(re.findall(r"\$\{?([A-Z][A-Z0-9_]*)\b", node))
    return set()


def test_grafana_gets_the_provisioning_and_every_variable_it_reads(
    resolved_compose: dict[str, Any],
) -> None:
    grafana = resolved_compose["services"]["grafana"]
    where = mounts(grafana)
    provisioning = REPO / "dashboards" / "provisioning"
    assert Path(where["/etc/grafana/provisioning"]) == provisioning
    files = sorted(provisioning.glob("*/*.yaml"))
    assert files, f"no provisioning files in {provisioning}"

    wanted = {name for f in files for name in grafana_variables(read_yaml(f.read_text()))}
    assert wanted - set(grafana["environment"]) == set()

    providers = read_yaml((provisioning / "dashboards" / "tillpulse.yaml").read_text())
    for provider in providers["providers"]:
        assert Path(where[provider["options"]["path"]]) == REPO / "dashboards" / "json"

    datasource = read_yaml((provisioning / "datasources" / "tillpulse.yaml").read_text())
    influxdb = resolved_compose["services"]["influxdb"]["environment"]
    assert grafana["environment"]["INFLUX_DB"] == influxdb["DOCKER_INFLUXDB_INIT_BUCKET"]
    assert grafana["environment"]["INFLUX_SIM_DB"] == influxdb["TILLPULSE_SIM_BUCKET"]
    assert datasource["datasources"][0]["jsonData"]["version"] == "InfluxQL"


# ------------------------------------------------------------------------------ docs


def test_the_operations_guide_says_what_to_do_about_every_alert_type() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    missing = [t.value for t in AlertType if f"`{t.value}`" not in guide]
    assert missing == []
