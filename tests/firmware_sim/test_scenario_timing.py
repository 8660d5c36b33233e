"""Incident timing: a scenario's offsets count from --start, and a run that would leave
incidents out refuses to start (README's own command once injected nothing)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from firmware_sim.cli import _parser, main
from firmware_sim.errors import ScenarioError
from firmware_sim.scenario_file import InjectionSpec, Scenario, check_timing, load_scenario
from firmware_sim.simtime import default_start
from wire.incidents import InjectionType
from wire.labels import read_labels
from wire.timestamps import NS_PER_HOUR, NS_PER_S, parse_iso

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
START = parse_iso("2026-11-25T00:00:00Z")


def documented_sim_commands() -> list[tuple[str, list[str]]]:
    """Every `tillpulse sim ...` in a code block of the docs, as (doc, argv after sim)."""
    found = []
    for doc in DOCS:
        for block in FENCE.findall(doc.read_text(encoding="utf-8")):
            for line in block.replace("\\\n", " ").splitlines():
                if "tillpulse sim " not in line:
                    continue
                words = shlex.split(line, comments=True)
                for at, word in enumerate(words[:-1]):
                    if word.endswith("tillpulse") and words[at + 1] == "sim":
                        found.append((doc.name, words[at + 2 :]))
    return found


def test_the_docs_show_sim_commands_with_incidents() -> None:
    commands = documented_sim_commands()
    assert any(doc == "README.md" and "demo" in argv for doc, argv in commands)
    assert len(commands) >= 4


@pytest.mark.parametrize(("doc", "argv"), documented_sim_commands())
def test_every_documented_sim_command_injects_every_incident(doc: str, argv: list[str]) -> None:
    args = _parser().parse_args(argv)
    start = default_start() if args.start is None else args.start
    check_timing(load_scenario(args.scenario), start, args.duration)  # raises if not


def test_the_latest_jittered_start_counts() -> None:
    late = InjectionSpec(
        type=InjectionType.TERMINAL_OFFLINE, start="7h", jitter="30m", duration="10m"
    )
    scenario = Scenario(name="late", injection=[late])
    check_timing(scenario, START, 7 * NS_PER_HOUR + 30 * 60 * NS_PER_S + 1)
    with pytest.raises(ScenarioError) as caught:
        check_timing(scenario, START, 7 * NS_PER_HOUR + 30 * 60 * NS_PER_S)
    assert "injects at 7h after --start" in str(caught.value)
    assert "use --duration 7h40m (the last incident's end)" in str(caught.value)


def test_a_run_that_starts_every_incident_is_accepted_even_if_one_is_clipped() -> None:
    check_timing(load_scenario("demo"), START, 16 * NS_PER_HOUR + NS_PER_S)
    check_timing(load_scenario("quiet"), START, NS_PER_S)  # nothing to inject


def test_allow_partial_runs_what_fits_and_labels_only_that(tmp_path: Path) -> None:
    labels = tmp_path / "labels.jsonl"
    argv = ["fleet", "--terminals", "4", "--sensors", "0", "--scenario", "demo", "--accel", "0"]
    argv += ["--start", "2026-11-25T00:00:00Z", "--duration", "12h", "--quiet"]
    argv += ["--out", str(tmp_path / "events.jsonl"), "--labels", str(labels)]
    assert main(argv) == 2
    assert not labels.exists()
    assert main([*argv, "--allow-partial"]) == 0
    assert [label.type for label in read_labels(labels)] == [
        InjectionType.TERMINAL_OFFLINE,  # 9h
        InjectionType.ACQUIRER_OUTAGE,  # 11h30m; card testing (14h) and tamper (16h) left out
    ]
