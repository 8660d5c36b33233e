"""`tillpulse broker` on a real Mosquitto running the stack's config: what a provisioned
agent may publish, and what `add`, `rotate`, `revoke` and `provision` do to a running
broker (one reload, no restart)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker.acl import render_acl
from broker.registry import load_registry
from testkit.servers import wait_until
from tests.broker.conftest import REGISTRY, Fleet
from tests.deploy.conftest import (
    ACCOUNTS,
    DEPLOY,
    MOSQUITTO_DIR,
    NOT_AUTHORIZED,
    SERVICE_PASSWORDS,
    Client,
    DeployBroker,
    run_entrypoint,
)
from wire.topics import Stream, device_subscription, device_topic

pytestmark = pytest.mark.integration

PI = "s0001-pi1"
PI_DEVICES = (PI, "s0001-pos1", "s0001-pos2", "s0001-env1")  # its own id first
OTHER_PI = "s0001-pi2"


def gateway(fleet: Fleet) -> Client:
    """gw1 on its share of the shared subscription, as the stack's gateways read."""
    client = fleet.connect("gw1", SERVICE_PASSWORDS["gw1"])
    assert client.connected, client.connack
    assert client.subscribe(device_subscription("gateways")).value == 1
    return client


def agent(fleet: Fleet, agent_id: str = PI) -> Client:
    client = fleet.connect(agent_id)
    assert client.connected, client.connack
    return client


def still_connected(client: Client, topic: str) -> bool:
    """A PUBACK, and no disconnect before it (the broker sends one client's packets in
    order, so a disconnect would have come first)."""
    return not client.publish(topic, b"still here").is_failure and client.disconnects == 0


def refused(fleet: Fleet, username: str, password: str) -> bool:
    client = fleet.connect(username, password)
    return client.connack is not None and client.connack.value == NOT_AUTHORIZED


# ------------------------------------------------------------ what an agent may publish


def test_a_pi_publishes_for_its_two_terminals_and_sensor_on_every_stream(fleet: Fleet) -> None:
    reader = gateway(fleet)
    pi = agent(fleet)
    sent = [
        (device_topic("s0001", device, stream), f"{device}/{stream}".encode())
        for device in PI_DEVICES
        for stream in Stream
    ]
    for topic, payload in sent:
        retained = topic.endswith("/state")  # the agent's online state, as edge retains it
        assert not pi.publish(topic, payload, retain=retained).is_failure, topic

    wait_until(
        lambda: len(reader.received()) >= len(sent),
        10,
        message=lambda: f"{len(reader.received())} of {len(sent)} delivered",
    )
    print(f"sent {len(sent)}, delivered {len(reader.received())}")
    assert sorted(reader.received()) == sorted(sent)
    # the retained states are kept for a later reader (gw2 subscribes afresh)
    late = fleet.connect("gw2", SERVICE_PASSWORDS["gw2"])
    late.subscribe("tp/v1/dev/+/+/state")
    wait_until(lambda: len(late.received()) == len(PI_DEVICES), 10, message="no retained states")


def test_a_pi_cannot_publish_for_another_pis_device_another_site_or_another_stream(
    fleet: Fleet,
) -> None:
    reader = gateway(fleet)
    pi = agent(fleet)
    forged = [
        device_topic("s0001", "s0001-pos3", "payment"),  # the other Pi's terminal
        device_topic("s0001", OTHER_PI, "health"),  # the other Pi itself
        device_topic("s0002", "s0001-pos1", "payment"),  # its own terminal, another site
        "tp/v1/dev/s0001/s0001-pos1/firmware",  # not a wire stream
        "tp/v1/alerts/s0001/tamper",
    ]
    for topic in forged:
        assert pi.publish(topic, b"forged").value == NOT_AUTHORIZED, topic
    own = device_topic("s0001", "s0001-pos1", "payment")
    assert not pi.publish(own, b"own").is_failure

    # one client's messages arrive in order: once "own" is in, nothing forged comes
    wait_until(reader.received, 10, message="nothing delivered")
    assert reader.received() == [(own, b"own")]


def test_a_pi_reads_nothing(fleet: Fleet) -> None:
    reader = gateway(fleet)
    pi = agent(fleet)
    pi.subscribe("tp/v1/#")  # granted by Mosquitto; the ACL filters every delivery
    other = agent(fleet, OTHER_PI)
    topic = device_topic("s0001", "s0001-pos3", "payment")
    assert not other.publish(topic, b"not for the other Pi").is_failure
    wait_until(reader.received, 10, message="not routed")
    assert still_connected(pi, device_topic("s0001", PI, "health"))
    assert pi.received() == []


# ---------------------------------------------------------------- changes to accounts


def test_revoke_disconnects_the_pi_at_once_and_refuses_its_reconnect(fleet: Fleet) -> None:
    pi = agent(fleet)
    other = agent(fleet, OTHER_PI)
    password = fleet.password(PI)
    pid = fleet.broker.pid

    run = fleet.broker_command("revoke", "--agent", PI, "--reason", "stolen")

    assert run.code == 0, run.err
    assert run.err.splitlines() == [
        f"added [[revoked]] {PI} to {fleet.registry}",
        f"revoked {PI} (stolen): account removed",
        f"wrote {fleet.broker.passwd_dir / 'acl'}: 1 agents (2 device ids), "
        "2 gateways, 1 cloud accounts",
        f"reloaded the broker, pid {pid}",
    ]
    wait_until(lambda: pi.disconnects >= 1, 10, message="the revoked Pi is still connected")
    assert refused(fleet, PI, password)
    assert still_connected(other, device_topic("s0001", OTHER_PI, "health"))
    assert fleet.broker.pid == pid and fleet.broker.is_running
    assert fleet.registry.read_text().startswith(REGISTRY)  # appended; the comments stay


def test_rotate_makes_the_old_password_fail_and_the_new_one_work(fleet: Fleet) -> None:
    old = fleet.password(PI)

    run = fleet.broker_command("rotate", "--agent", PI)

    assert run.code == 0, run.err
    secret = fleet.broker.secrets_dir / f"{PI}.password"
    assert f"rotated {PI}: password written to {secret}" in run.err.splitlines()
    new = fleet.password(PI)
    assert new != old
    assert new not in run.out + run.err
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert stat.S_IMODE(secret.parent.stat().st_mode) == 0o700
    assert refused(fleet, PI, old)
    assert agent(fleet).connected
    assert agent(fleet, OTHER_PI).connected  # the others' passwords are unchanged


def test_add_lets_a_new_pi_in_without_restarting_the_broker(fleet: Fleet) -> None:
    reader = gateway(fleet)
    pid = fleet.broker.pid
    new_pi = "s0002-pi1"
    assert refused(fleet, new_pi, "anything")

    run = fleet.broker_command(
        "add", "--agent", new_pi, "--site", "s0002", "--device", "s0002-pos1"
    )

    assert run.code == 0, run.err
    assert run.err.splitlines()[:2] == [
        f"added [[agent]] {new_pi} to {fleet.registry}",
        f"added {new_pi}: password written to {fleet.broker.secrets_dir / f'{new_pi}.password'}",
    ]
    assert run.err.splitlines()[-1] == f"reloaded the broker, pid {pid}"
    topic = device_topic("s0002", "s0002-pos1", "payment")
    new = agent(fleet, new_pi)
    assert not new.publish(topic, b"first sale").is_failure
    wait_until(lambda: reader.received() == [(topic, b"first sale")], 10, message="not routed")
    assert fleet.broker.pid == pid
    assert fleet.registry.read_text().startswith(REGISTRY)


def test_provision_keeps_the_service_accounts_and_drops_an_agent_left_out(
    fleet: Fleet,
) -> None:
    passwd = fleet.broker.passwd_dir / "passwd"
    services = [line for line in passwd.read_text().splitlines() if line.startswith(("gw", "cl"))]
    pi2 = agent(fleet, OTHER_PI)
    # the operator deletes the second Pi's [[agent]] block
    fleet.registry.write_text(REGISTRY.replace('id = "s0001-pi2"', 'id = "s0001-pi9"'))

    run = fleet.broker_command("provision")

    assert run.code == 0, run.err
    assert f"removed {OTHER_PI}: no longer in the registry, account removed" in run.err
    assert "added s0001-pi9: password written to" in run.err
    wait_until(lambda: pi2.disconnects >= 1, 10, message="the dropped Pi is still connected")
    assert [line for line in passwd.read_text().splitlines() if line in services] == services
    for name, password in SERVICE_PASSWORDS.items():
        assert fleet.connect(name, password).connected, name
    assert agent(fleet).connected


def test_adding_a_revoked_pi_again_is_refused_with_how_to_re_enable_it(fleet: Fleet) -> None:
    assert fleet.broker_command("revoke", "--agent", PI, "--reason", "stolen").code == 0
    before = fleet.registry.read_text()
    revocation = load_registry(fleet.registry).revocation(PI)
    assert revocation is not None

    run = fleet.broker_command("add", "--agent", PI, "--site", "s0001")

    assert run.code == 2
    assert run.err == (
        f"tillpulse broker: agent {PI} was revoked (stolen, {revocation.at})"
        f": to re-enable it, delete its [[revoked]] entry from {fleet.registry} (keep or add "
        "its [[agent]] entry) and run `tillpulse broker provision`; it gets a new password\n"
    )
    assert fleet.registry.read_text() == before


# ------------------------------------------------------------- the operator's mistakes


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown-agent", "unknown agent s0009-pi1: no [[agent]] of {registry} has it"),
        ("bad-registry", "{registry}, [[agent]] #2 (s0001-pi2): unknown key 'device'"),
        ("no-pid-file", "cannot read the pid file {pid_file} (No such file or directory)"),
        ("stale-pid-file", "pid file {pid_file} is stale: pid {stale} is not a running mosquitto"),
        ("broker-dir-a-file", "broker dir {registry} is not a directory"),
        ("secrets-dir-a-file", "cannot write to the secrets dir {registry}: File exists"),
    ],
)
def test_an_operator_mistake_is_one_line_with_the_fix_and_exit_2(
    fleet: Fleet, case: str, expected: str
) -> None:
    stale = os.getpid()  # a running process, not mosquitto
    passwd = (fleet.broker.passwd_dir / "passwd").read_bytes()
    command, args, options = "rotate", ["--agent", PI], {}
    if case == "unknown-agent":
        args = ["--agent", "s0009-pi1"]
    elif case == "bad-registry":
        fleet.registry.write_text(REGISTRY.replace('devices = ["s0001-pos3"]', 'device = "x"'))
    elif case == "no-pid-file":
        fleet.pid_file.unlink()
    elif case == "stale-pid-file":
        fleet.pid_file.write_text(f"{stale}\n")
    elif case == "broker-dir-a-file":
        options = {"broker_dir": fleet.registry}
    else:
        options = {"secrets_dir": fleet.registry}

    run = fleet.broker_command(command, *args, **options)

    assert run.code == 2
    assert run.err.startswith(
        "tillpulse broker: "
        + expected.format(registry=fleet.registry, pid_file=fleet.pid_file, stale=stale)
    ), run.err
    assert run.err.count("\n") == 1 and "Traceback" not in run.err
    assert (fleet.broker.passwd_dir / "passwd").read_bytes() == passwd  # refused before it


# --------------------------------------------------------------- the files themselves


def test_provision_keeps_the_files_owner_and_mode(fleet: Fleet) -> None:
    files = [fleet.broker.passwd_dir / name for name in ("passwd", "acl")]
    owner = 65534 if os.geteuid() == 0 else os.geteuid()  # nobody, as root
    for path in files:
        os.chown(path, owner, owner if os.geteuid() == 0 else os.getegid())
        path.chmod(0o640)

    assert fleet.broker_command("rotate", "--agent", PI, reload=False).code == 0

    for path in files:
        assert (path.stat().st_uid, stat.S_IMODE(path.stat().st_mode)) == (owner, 0o640), path


def test_the_seeded_acl_is_what_provision_renders_for_the_stacks_services(
    tmp_path: Path,
) -> None:
    # entrypoint.sh seeds the ACL of a new stack from deploy/mosquitto/acl
    broker = DeployBroker(tmp_path / "broker")
    run_entrypoint(broker, ACCOUNTS)
    seeded = (broker.passwd_dir / "acl").read_text()
    assert seeded == (MOSQUITTO_DIR / "acl").read_text()
    assert seeded == render_acl(load_registry(DEPLOY / "registry.toml"))
