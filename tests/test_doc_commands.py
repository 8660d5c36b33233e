"""Every `python -m <module>` the docs tell a reader to run names a module that runs.

Running them all would take minutes (benchmarks, figure tables), so this checks what
goes stale on a rename: the module exists and is a command (a ``__main__`` guard, or a
package with a ``__main__`` module). The README's two commands are run by CI itself.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = sorted([ROOT / "README.md", ROOT / "BENCHMARKS.md", *(ROOT / "docs").glob("*.md")])
COMMAND = re.compile(r"python3? -m ((?:tillpulse|bench|tests|cloud|edge|gateway|firmware_sim|"
                     r"dashboards)(?:\.\w+)*)")  # fmt: skip


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
