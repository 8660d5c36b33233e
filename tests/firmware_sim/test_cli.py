"""The command line: JSONL output, determinism, labels, scenario errors."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from firmware_sim import cli
from firmware_sim.cli import main
from firmware_sim.errors import ScenarioError
from firmware_sim.scenario_file import load_scenario, shipped_scenarios
from testkit.servers import wait_until
from tests.firmware_sim.helpers import Agent
from tillpulse.cli import main as tillpulse_main
from wire.incidents import InjectionType
from wire.labels import read_labels
from wire.messages import PaymentTransaction, decode


def fleet(tmp_path: Path, name: str, *extra: str) -> tuple[bytes, bytes]:
    out, labels = tmp_path / f"{name}.jsonl", tmp_path / f"{name}.labels.jsonl"
    code = main(
        [
            "fleet",
            "--terminals",
            "12",
            "--sensors",
            "3",
            "--duration",
            "1d",
            "--accel",
            "0",
            "--start",
            "2026-11-23T00:00:00Z",
            "--scenario",
            "demo",
            "--status-every",
            "600",
            "--sensor-every",
            "600",
            "--out",
            str(out),
            "--labels",
            str(labels),
            "--quiet",
            *extra,
        ]
    )
    assert code == 0
    return out.read_bytes(), labels.read_bytes()


def test_same_seed_same_bytes_other_seed_other_events(tmp_path: Path) -> None:
    first = fleet(tmp_path, "a", "--seed", "7")
    again = fleet(tmp_path, "b", "--seed", "7")
    other = fleet(tmp_path, "c", "--seed", "8")
    assert first == again
    assert first[0] != other[0] and first[1] != other[1]
    lines = first[0].splitlines()
    assert len(lines) > 2000
    assert all(decode(line) for line in lines)


def test_demo_labels_are_written(tmp_path: Path) -> None:
    fleet(tmp_path, "demo")
    labels = read_labels(tmp_path / "demo.labels.jsonl")
    assert {lb.type for lb in labels} == {
        InjectionType.TERMINAL_OFFLINE,
        InjectionType.ACQUIRER_OUTAGE,
        InjectionType.CARD_TESTING,
        InjectionType.TAMPER,
    }


def test_tillpulse_sim_dispatches_here(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    argv = [
        "sim",
        "fleet",
        "--terminals",
        "2",
        "--duration",
        "1h",
        "--accel",
        "0",
        "--out",
        str(out),
        "--quiet",
    ]
    assert tillpulse_main(argv) == 0
    assert out.read_bytes().count(b"\n") > 2


def test_shipped_scenarios_load_and_everything_covers_every_type() -> None:
    assert {"quiet", "demo", "everything"} <= set(shipped_scenarios())
    for name in shipped_scenarios():
        load_scenario(name)
    assert load_scenario("quiet").injection == []
    types = {i.type for i in load_scenario("everything").injection}
    assert types == set(InjectionType)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            'name = "x"\n[[injection]]\ntype = "tamper"\nstart = 5\nduration = "1h"\n',
            "injection[0].start: Expected `str`, got `int`",
        ),
        (
            'name = "x"\n[[injection]]\ntype = "meteor"\nstart = "1h"\nduration = "1h"\n',
            "injection[0].type: Invalid enum value 'meteor'",
        ),
        (
            'name = "x"\n[[injection]]\ntype = "tamper"\nstart = "1h"\nduration = "1h"\nwhen = 1\n',
            "injection[0]: Object contains unknown field `when`",
        ),
        (
            'name = "x"\n[[injection]]\ntype = "tamper"\nstart = "soon"\nduration = "1h"\n',
            "injection[0].start: 'soon' is not a duration",
        ),
        (
            'name = "x"\n[[injection]]\ntype = "tamper"\nstart = "1h"\nduration = "1h"\n'
            'targets = "all of them"\n',
            "injection[0].targets: 'all of them' is not a selector",
        ),
        ('name = "x"\n[[injection]\n', "is not valid TOML"),
    ],
)
def test_a_bad_scenario_names_file_and_key(tmp_path: Path, body: str, where: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    assert str(path) in str(caught.value) and where in str(caught.value)


def test_cli_reports_a_target_the_fleet_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "ghost.toml"
    path.write_text(
        'name = "ghost"\n[[injection]]\ntype = "tamper"\nstart = "1h"\nduration = "1h"\n'
        'targets = { devices = ["s9999-pos1"] }\n',
        encoding="utf-8",
    )
    assert main(["fleet", "--scenario", str(path), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    assert "injection[0]: no device s9999-pos1 in this fleet" in capsys.readouterr().err


def test_time_acceleration_paces_the_run(tmp_path: Path) -> None:
    """x3600: a simulated hour takes a wall second, and no event comes early."""
    started = time.monotonic()
    out = tmp_path / "paced.jsonl"
    assert (
        main(
            [
                "fleet",
                "--terminals",
                "3",
                "--sensors",
                "1",
                "--duration",
                "1h",
                "--accel",
                "3600",
                "--start",
                "2026-11-23T12:00:00Z",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    assert 1.0 <= time.monotonic() - started < 10.0


def test_sim_serial_serves_an_agent_on_each_port(tmp_path: Path) -> None:
    """The agent opens the ports late (samples sent before are lost); every payment
    still arrives, re-sent until acknowledged."""
    common = ["--terminals", "2", "--sensors", "1", "--duration", "12h", "--accel", "0",
              "--start", "2026-11-23T00:00:00Z", "--status-every", "900",
              "--sensor-every", "900", "--quiet"]  # fmt: skip
    assert main(["fleet", *common, "--out", str(tmp_path / "expected.jsonl")]) == 0
    expected = {
        (m.device, m.seq)
        for m in map(decode, (tmp_path / "expected.jsonl").read_bytes().splitlines())
        if isinstance(m, PaymentTransaction)
    }
    ports_file = tmp_path / "ports.json"
    codes: list[int] = []
    argv = ["serial", *common, "--ports", str(ports_file), "--retransmit", "0.2"]
    worker = threading.Thread(target=lambda: codes.append(main(argv)))
    worker.start()
    ports = wait_until(lambda: _read_ports(ports_file), timeout=10)
    agents = [Agent(port) for port in ports.values()]

    def finished() -> bool:
        alive = worker.is_alive()
        for agent in agents:
            agent.poll()
        return not alive

    wait_until(finished, timeout=30, interval=0.005)
    assert codes == [0]
    received = {
        (m.device, m.seq) for a in agents for m in a.received if isinstance(m, PaymentTransaction)
    }
    assert received == expected and len(expected) > 100
    for agent in agents:
        agent.close()


def _read_ports(path: Path) -> dict[str, str]:
    try:
        ports: dict[str, str] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return ports


@pytest.mark.parametrize(
    ("argument", "complaint"),
    [(["--terminals", "0"], "0 is not > 0"), (["--accel", "-1"], "-1 is not >= 0.0"),
     (["--status-every", "0"], "0 is not > 0.0"),
     (["--publish-window", "x"], "'x' is not a number"),
     (["--duration", "soon"], "'soon' is not a duration")],
)  # fmt: skip
def test_bad_arguments_exit_2_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argument: list[str], complaint: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["fleet", *argument, "--out", str(tmp_path / "x.jsonl"), "--quiet"])
    assert caught.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["kv", "json", "quiet"])
def test_in_a_pipe_progress_is_log_lines_every_few_seconds(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
) -> None:
    """stderr is no terminal here (captured): no rich bar, which would print nothing
    until the end, but a progress log line now and then; JSON with --log-json."""
    monkeypatch.setattr(cli, "PROGRESS_LOG_S", 0.05)
    argv = ["fleet", "--terminals", "30", "--duration", "1d", "--accel", "0"]
    argv += ["--start", "2026-11-23T00:00:00Z", "--out", str(tmp_path / "events.jsonl")]
    argv += {"kv": [], "json": ["--log-json"], "quiet": ["-q"]}[mode]
    assert main(argv) == 0
    lines = capsys.readouterr().err.splitlines()
    if mode == "quiet":
        assert lines == []
        return
    if mode == "json":
        records = [json.loads(line) for line in lines]  # nothing but JSON on stderr
        progress = [r for r in records if r["event"] == "sim_progress"]
        assert {"reached", "done_pct", "events", "events_per_s"} <= set(progress[0])
    else:
        progress = [line for line in lines if "event=sim_progress" in line]
        assert "reached=2026-11-23T" in progress[0] and " events=" in progress[0]
    assert len(progress) >= 2
