"""The commands the docs tell a reader to run, run.

A fenced block opened with ```` ```sh doc-test ```` (the info string's second word is
invisible on GitHub) is run here, command by command, in a temporary directory as
cwd: `tillpulse` is this checkout's console script, a path of the repository
(``edge/deploy/edge.example.toml``) is made absolute, and a broker or InfluxDB on
localhost's default port is one a fixture started. Every command must exit 0.

A ```` ```sh ```` block that cannot run here (systemctl, sudo on a Pi, docker-compose,
an editor, a service that runs until stopped) stays unmarked; it is listed as a
skipped test with the reason (``pytest -ra`` shows them), and an unmarked block with
no such reason fails: mark it or make it runnable.

Running every `python -m <module>` the docs cite would take minutes (benchmarks,
figure tables), so for those this checks what goes stale on a rename: the module
exists and is a command. The README's two commands are run by CI itself.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
COMMAND = re.compile(r"python3? -m ((?:tillpulse|bench|tests|cloud|edge|gateway|firmware_sim|"
                     r"dashboards)(?:\.\w+)*)")  # fmt: skip
MARKER: Final = "doc-test"
TILLPULSE: Final = str(Path(sys.executable).with_name("tillpulse"))
# why a block is not run here, by what it contains
NOT_HERE: Final = (
    (re.compile(r"\bmake (demo|test)\b"), "the README's two commands: CI runs them"),
    (re.compile(r"\bmake wheel\b"), "rewrites build/ and dist/ of the checkout"),
    (re.compile(r"\bsudo\b|/opt/tillpulse|/etc/tillpulse"), "root on the target machine"),
    (re.compile(r"\b(systemctl|journalctl)\b"), "systemd"),
    (re.compile(r"\bdocker[- ]compose\b"), "docker-compose with an engine"),
    (re.compile(r"\$EDITOR"), "an editor"),
    (re.compile(r"\b(scp|ssh|git clone)\b"), "another machine or a download"),
    (re.compile(r"<[^>]+>|\[--?\w"), "placeholders (<...>) or optional parts ([...])"),
    (re.compile(r"\bgateway run\b|--every\b"), "a service: runs until stopped"),
    (re.compile(r"python -m (bench|tests)\."), "a benchmark or figure table: minutes"),
)


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    marked: bool
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"

    def commands(self) -> list[str]:
        """One command a line: continuations joined, comments and blanks dropped."""
        joined = re.sub(r"\\\n\s*", " ", self.text)
        return [line for line in joined.splitlines() if shlex.split(line, comments=True)]


def shell_blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        lines = doc.read_text(encoding="utf-8").splitlines()
        start: int | None = None
        for number, line in enumerate(lines):
            fence = line.strip()
            if start is None and fence.startswith("```sh"):
                start, marked = number, fence.split()[1:] == [MARKER]
            elif start is not None and fence == "```":
                text = "\n".join(lines[start + 1 : number])
                found.append(Block(str(doc.relative_to(ROOT)), start + 1, marked, text))
                start = None
    return found


def _runnable(argv: list[str], servers: dict[str, str]) -> list[str]:
    """A documented command as run here: this checkout's tillpulse, the repository's
    paths absolute, the fixtures' servers for localhost's default ports."""
    out = []
    for documented in argv:
        arg = TILLPULSE if documented in ("tillpulse", ".venv/bin/tillpulse") else documented
        for default, actual in servers.items():
            arg = arg.replace(default, actual)
        if "/" in arg and not arg.startswith(("/", "-", "http")) and (ROOT / arg).exists():
            arg = str(ROOT / arg)
        out.append(arg)
    return out


@pytest.mark.parametrize("block", [b for b in shell_blocks() if b.marked], ids=lambda b: b.id)
def test_a_marked_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    servers = {}
    if re.search(r"(localhost|127\.0\.0\.1):1883", block.text):
        broker = request.getfixturevalue("mosquitto_session")
        servers |= {f"{h}:1883": f"{broker.host}:{broker.port}" for h in ("localhost", "127.0.0.1")}
    if re.search(r"(localhost|127\.0\.0\.1):8086", block.text):
        influx = request.getfixturevalue("influxdb_session")
        servers |= {f"{h}:8086": f"{influx.host}:{influx.port}" for h in ("localhost", "127.0.0.1")}
    # as a reader's shell has it: no override of the test run's config
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TILLPULSE_")}
    for command in block.commands():
        for part in command.split("&&"):
            argv = _runnable(shlex.split(part, comments=True), servers)
            done = subprocess.run(
                argv,
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, f"{block.id}: `{part.strip()}`\n{done.stderr}"


def test_the_docs_mark_blocks_to_run() -> None:
    assert sum(block.marked for block in shell_blocks()) >= 2


@pytest.mark.parametrize("block", [b for b in shell_blocks() if not b.marked], ids=lambda b: b.id)
def test_an_unmarked_block_says_why_it_is_not_run(block: Block) -> None:
    reasons = [reason for pattern, reason in NOT_HERE if pattern.search(block.text)]
    assert reasons, f"{block.id}: mark it ```sh {MARKER} (or make it runnable):\n{block.text}"
    pytest.skip(f"{block.id} not run here: {'; '.join(reasons)}")


def documented_modules() -> list[tuple[str, str]]:
    found = {
        (module, doc.name)
        for doc in DOCS
        for module in COMMAND.findall(doc.read_text(encoding="utf-8"))
    }
    return sorted(found)


def test_the_docs_cite_module_commands() -> None:
    assert len(documented_modules()) >= 5


@pytest.mark.parametrize(("module", "doc"), documented_modules())
def test_a_documented_module_command_exists_and_runs_as_a_command(module: str, doc: str) -> None:
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin is not None, f"{doc}: no module {module}"
    if spec.submodule_search_locations:  # a package: it runs its __main__
        assert importlib.util.find_spec(f"{module}.__main__") is not None, f"{doc}: {module}"
        return
    source = Path(spec.origin).read_text(encoding="utf-8")
    assert 'if __name__ == "__main__":' in source, f"{doc}: {module} is not a command"
