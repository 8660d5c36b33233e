"""docker-compose.yml as docker-compose resolves it: valid with .env.example, clear
about missing secrets, and consistent with the files it mounts (the services' TOML
configs, the broker's accounts, Grafana's provisioning). No Docker engine needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from cloud.config import CloudConfig
from gateway.config import GatewayConfig
from runtime.config import load_config
from tests.deploy.conftest import (
    COMPOSE_FILE,
    ENV_EXAMPLE,
    MOSQUITTO_DIR,
    REPO,
    env_example,
    read_yaml,
    run_compose,
)
from wire.incidents import AlertType

VARIABLE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")
REQUIRED = sorted(
    {m.group(1) for m in VARIABLE.finditer(COMPOSE_FILE.read_text()) if "?" in (m.group(2) or "")}
)
GATEWAYS = ("gateway-1", "gateway-2")


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
    assert set(env_example()) == used


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


def test_every_service_has_a_healthcheck(resolved_compose: dict[str, Any]) -> None:
    services = resolved_compose["services"]
    assert {"mosquitto", "influxdb", "grafana", *GATEWAYS, "cloud", "fleet"} <= set(services)
    unchecked = [
        name for name, service in services.items() if "test" not in service.get("healthcheck", {})
    ]
    assert unchecked == []


def test_the_simulated_fleet_runs_only_with_the_profile_that_opens_its_listener(
    resolved_compose: dict[str, Any], tmp_path: Path
) -> None:
    services = resolved_compose["services"]
    profiled = {name: s["profiles"] for name, s in services.items() if "profiles" in s}
    assert profiled == {"fleet": ["sim"]}
    assert "1884" in " ".join(services["fleet"]["entrypoint"])
    # COMPOSE_PROFILES selects the profile and reaches the broker, whose entrypoint.sh
    # opens the listener only for "sim" (tests/deploy/test_identity.py runs both ways)
    assert services["mosquitto"]["environment"]["COMPOSE_PROFILES"] == ""
    env_file = tmp_path / "env"
    env_file.write_text(
        ENV_EXAMPLE.read_text().replace("COMPOSE_PROFILES=\n", "COMPOSE_PROFILES=sim\n")
    )
    done = run_compose(env_file, "config")
    assert done.returncode == 0, done.stderr
    with_sim = read_yaml(done.stdout)["services"]["mosquitto"]["environment"]
    assert with_sim["COMPOSE_PROFILES"] == "sim"


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
    assert datasource["datasources"][0]["jsonData"]["version"] == "InfluxQL"


# ------------------------------------------------------------------------------ docs


def test_the_operations_guide_says_what_to_do_about_every_alert_type() -> None:
    guide = (REPO / "docs" / "operations.md").read_text()
    missing = [t.value for t in AlertType if f"`{t.value}`" not in guide]
    assert missing == []
