"""docs/architecture.md names real code, so it cannot rot silently.

Every ``path.py`` it mentions exists; every ``path.py:name`` is defined in that
file (a function, class or module-level assignment), and ``path.py:Class.member``
is a method or attribute of that class; every bare ``Class.member`` in backticks
is defined by some class of the product; every repository path in backticks
exists. It also names each package of the import-linter layers, and README.md
links to it. No server needed: this reads files only.
"""

from __future__ import annotations

import ast
import functools
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"
TEXT = DOC.read_text(encoding="utf-8")
PRODUCT = ("wire", "runtime", "edge", "gateway", "cloud", "firmware_sim", "dashboards", "broker")
PACKAGES = (*PRODUCT, "testkit", "tillpulse")

# `edge/outbox.py:Outbox.put_many`, `wire/points.py:to_line`, `runtime/logs.py`; not the
# `cli.py` of `<package>/cli.py` (a placeholder, not a file).
PY_REF = re.compile(
    r"(?<![\w/.<>-])((?:[\w-]+/)*[\w-]+\.py)(?::([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)?))?"
)
BACKTICKED = re.compile(r"`([^`\n]+)`")
CLASS_MEMBER = re.compile(r"[A-Z]\w*\.[A-Za-z_]\w*")
REPO_PATH = re.compile(r"[\w.-]+(?:/[\w.-]+)+/?")


def _py_refs() -> list[tuple[str, str | None]]:
    return sorted({(m.group(1), m.group(2)) for m in PY_REF.finditer(TEXT)}, key=str)


def _backticked() -> list[str]:
    return sorted({m.group(1) for m in BACKTICKED.finditer(TEXT)})


@functools.cache
def _module(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _names(body: list[ast.stmt]) -> set[str]:
    """What a module or class body defines: defs, classes, assignments, imports."""
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


def _classes(module: ast.Module) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in module.body if isinstance(node, ast.ClassDef)}


def _product_files() -> list[Path]:
    return [path for package in PACKAGES for path in sorted((ROOT / package).rglob("*.py"))]


def test_the_doc_names_code() -> None:
    # a pattern that stopped matching would make every other test here pass vacuously
    assert len(_py_refs()) >= 60
    assert len([t for t in _backticked() if CLASS_MEMBER.fullmatch(t)]) >= 10


@pytest.mark.parametrize(("path", "name"), _py_refs(), ids=lambda v: v or "")
def test_every_python_reference_exists(path: str, name: str | None) -> None:
    file = ROOT / path
    assert file.is_file(), f"docs/architecture.md names {path}, which does not exist"
    if name is None:
        return
    module = _module(file)
    head, _, member = name.partition(".")
    assert head in _names(module.body), f"{path} defines no `{head}`"
    if member:
        cls = _classes(module).get(head)
        assert cls is not None, f"`{head}` in {path} is not a class"
        assert member in _names(cls.body), f"class {head} in {path} has no `{member}`"


@pytest.mark.parametrize(
    "ref", [t for t in _backticked() if CLASS_MEMBER.fullmatch(t)], ids=lambda v: v
)
def test_every_bare_class_member_exists(ref: str) -> None:
    cls_name, member = ref.split(".")
    found = [
        path
        for path in _product_files()
        if (cls := _classes(_module(path)).get(cls_name)) is not None and member in _names(cls.body)
    ]
    assert found, f"docs/architecture.md names `{ref}`, which no class of the product defines"


@pytest.mark.parametrize(
    "ref",
    [
        t
        for t in _backticked()
        if REPO_PATH.fullmatch(t) and (ROOT / t.split("/")[0]).exists() and ".py:" not in t
    ],
    ids=lambda v: v,
)
def test_every_repository_path_exists(ref: str) -> None:
    assert (ROOT / ref).exists(), f"docs/architecture.md names {ref}, which does not exist"


def test_it_names_every_layered_package() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers" and "containers" not in c)
    packages = {p.strip() for layer in layers["layers"] for p in layer.split("|")}
    assert packages == set(PACKAGES)
    missing = [p for p in sorted(packages) if f"`{p}/`" not in TEXT]
    assert not missing, f"docs/architecture.md does not describe {missing}"


def test_readme_links_it() -> None:
    assert "(docs/architecture.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
