"""The commands the docs tell a reader to run, run.

A fenced block opened with ```` ```sh doc-test ```` (the info string's second word is
invisible on GitHub) is run here as a reader's shell would (tests/doc_blocks.py reads
it), in a temporary directory as cwd: `tillpulse` is this checkout's console script,
a path of the repository (``edge/deploy/edge.example.toml``) is made absolute, and a
broker or InfluxDB on localhost's default port (1883, 8086) is one a fixture started,
in the commands and in the files the block writes (``port = 1883`` too), as is the
gateway's HTTP port 9464. Every command must exit 0 with no traceback; a service
started with ``&`` must get ready and, stopped with SIGTERM (``kill %N``, or at the
block's end), exit 0. A block that scores a run (``cloud evaluate --report-out F``)
promises what its doc says: every labelled incident detected.

A ```` ```sh ```` block that cannot run here (systemctl, sudo on a Pi, docker-compose,
an editor) stays unmarked; it is listed as a skipped test with the reason (``pytest
-ra`` shows them), and an unmarked block with no such reason fails: mark it or make it
runnable. Its commands still cannot drift (tests/doc_static.py): each `tillpulse`
command parses with the real command line, each docker-compose service and profile,
make target and repository path it names exists.

Running every `python -m <module>` the docs cite would take minutes (benchmarks,
figure tables), so for those this checks what goes stale on a rename: the module
exists and is a command. The README's two commands are run by CI itself.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

from testkit.servers import free_port, wait_until
from tests.doc_blocks import DOCS, MARKER, ROOT, Block, Run, Start, Stop, Write, shell_blocks, steps
from tests.doc_static import Compose, check_command

COMMAND = re.compile(r"python3? -m ((?:tillpulse|bench|tests|cloud|edge|gateway|firmware_sim|"
                     r"dashboards)(?:\.\w+)*)")  # fmt: skip
TILLPULSE: Final = str(Path(sys.executable).with_name("tillpulse"))
READY_S: Final = 60.0
STOP_S: Final = 30.0
SERVERS: Final = re.compile(r"(localhost|127\.0\.0\.1):(1883|8086)")
_SERVER_MARKS: Final = (pytest.mark.integration, pytest.mark.slow)
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
    (re.compile(r"python -m (bench|tests)\."), "a benchmark or figure table: minutes"),
    (re.compile(r"--accel [1-9]"), "simulated hours at a wall-clock pace: minutes"),
)


class Job:
    """A service a block left running: its process and its log."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str], number: int) -> None:
        self.command = " ".join(argv)
        self.log = cwd / f".job{number}.stderr"
        with self.log.open("w") as log:
            self.process = subprocess.Popen(
                argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=log
            )

    def wait_ready(self, event: str) -> None:
        def ready() -> bool:
            assert self.process.poll() is None, f"`{self.command}` exited:\n{self.stderr()}"
            return f"event={event}" in self.stderr()

        wait_until(ready, READY_S, message=lambda: f"`{self.command}`: no event={event}")

    def stop(self) -> None:
        """SIGTERM, as ``kill %N``: a clean stop, exit 0, no traceback."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=STOP_S)
        assert code == 0, f"`{self.command}` exited {code} on SIGTERM:\n{self.stderr()}"
        assert "Traceback" not in self.stderr(), f"`{self.command}`:\n{self.stderr()}"

    def stderr(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def _substitutions(block: Block, request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    """localhost's default ports as this test's servers (fresh ones: a block's gateway
    must not resume another test's session on a shared broker)."""
    pairs = []
    if re.search(r"(localhost|127\.0\.0\.1):1883", block.text):
        broker = request.getfixturevalue("mosquitto")
        pairs += [(f"{h}:1883", f"{broker.host}:{broker.port}") for h in ("localhost", "127.0.0.1")]
        pairs.append(("port = 1883", f"port = {broker.port}"))
    if re.search(r"(localhost|127\.0\.0\.1):8086", block.text):
        influx = request.getfixturevalue("influxdb")
        pairs += [(f"{h}:8086", f"{influx.host}:{influx.port}") for h in ("localhost", "127.0.0.1")]
    if ":9464" in block.text:
        pairs.append((":9464", f":{free_port()}"))
    return pairs


def _substituted(text: str, pairs: list[tuple[str, str]]) -> str:
    for default, actual in pairs:
        text = text.replace(default, actual)
    return text


def _runnable(argv: list[str], pairs: list[tuple[str, str]]) -> list[str]:
    """A documented command as run here: this checkout's tillpulse, the repository's
    paths absolute, the test's servers for localhost's default ports."""
    out = []
    for documented in argv:
        arg = TILLPULSE if documented in ("tillpulse", ".venv/bin/tillpulse") else documented
        arg = _substituted(arg, pairs)
        if "/" in arg and not arg.startswith(("/", "-", "http")) and (ROOT / arg).exists():
            arg = str(ROOT / arg)
        out.append(arg)
    return out


def _marked_blocks() -> list[object]:
    """The blocks to run; one that needs the servers is an integration test, and slow."""
    return [
        pytest.param(block, id=block.id, marks=_SERVER_MARKS if SERVERS.search(block.text) else ())
        for block in shell_blocks()
        if block.marked
    ]


@pytest.mark.parametrize("block", _marked_blocks())
def test_a_marked_block_runs(block: Block, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    plan = steps(block)
    pairs = _substitutions(block, request)
    # as a reader's shell has it: no override of the test run's config
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TILLPULSE_")}
    jobs: list[Job] = []
    try:
        for step in plan:
            if isinstance(step, Write):
                (tmp_path / step.path).write_text(_substituted(step.text, pairs), "utf-8")
            elif isinstance(step, Run):
                argv = _runnable(step.argv, pairs)
                done = subprocess.run(
                    argv,
                    cwd=tmp_path,
                    env=environment,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                shown = " ".join(step.argv)
                assert done.returncode == 0, f"{block.id}: `{shown}`\n{done.stderr}"
                assert "Traceback" not in done.stderr, f"{block.id}: `{shown}`\n{done.stderr}"
            elif isinstance(step, Start):
                jobs.append(Job(_runnable(step.argv, pairs), tmp_path, environment, len(jobs) + 1))
                jobs[-1].wait_ready(step.ready)
            elif isinstance(step, Stop):
                for number in step.jobs:
                    jobs[number - 1].stop()
        for job in jobs:
            if job.process.poll() is None:
                job.stop()
    finally:
        for job in jobs:
            if job.process.poll() is None:
                job.process.kill()
                job.process.wait()
    for report in _evaluation_reports(block, tmp_path):
        _assert_every_incident_detected(block, report)


def _evaluation_reports(block: Block, cwd: Path) -> list[Path]:
    return [
        cwd / step.argv[step.argv.index("--report-out") + 1]
        for step in steps(block)
        if isinstance(step, Run) and "evaluate" in step.argv and "--report-out" in step.argv
    ]


def _assert_every_incident_detected(block: Block, report_file: Path) -> None:
    report = json.loads(report_file.read_text(encoding="utf-8"))
    overall = report["overall"]
    assert overall["labels"] > 0, f"{block.id}: no labelled incident to score"
    assert report["missed"] == [], f"{block.id}: incidents not detected: {report['missed']}"
    assert overall["detected"] == overall["labels"], f"{block.id}: {overall}"


def test_the_docs_mark_blocks_to_run() -> None:
    assert sum(block.marked for block in shell_blocks()) >= 3


@pytest.fixture(scope="module")
def compose() -> Compose | None:
    binary = shutil.which("docker-compose")
    return None if binary is None else Compose.load(binary)


@pytest.mark.parametrize("block", [b for b in shell_blocks() if not b.marked], ids=lambda b: b.id)
def test_an_unmarked_block_names_only_what_exists(block: Block, compose: Compose | None) -> None:
    found = [problem for line in block.commands() for problem in check_command(line, compose)]
    assert found == [], f"{block.id}:\n" + "\n".join(found)
    if compose is None and "docker" in block.text:
        pytest.skip("docker-compose is not installed: the services it names are not checked")


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
