"""The committed dashboard and provisioning files are exactly what the code generates."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from dashboards.boards import ALL
from dashboards.cli import main
from dashboards.generate import DEFAULT_OUT, PACKAGE_DIR, artefacts, stale


def test_the_committed_files_are_what_the_code_generates() -> None:
    assert stale(PACKAGE_DIR) == [], "run `tillpulse dashboards generate --out dashboards`"


def test_generate_writes_under_the_current_directory_not_into_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p: p.stat().st_mtime_ns for p in PACKAGE_DIR.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    assert main(["generate"]) == 0
    out = tmp_path / DEFAULT_OUT
    assert capsys.readouterr().err == f"wrote {len(artefacts())} files under {out}\n"
    assert stale(out) == []
    assert {p: p.stat().st_mtime_ns for p in PACKAGE_DIR.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("board", ALL, ids=lambda b: b.uid)
def test_the_import_form_asks_for_an_influxdb_and_defaults_the_variable_to_it(board: Any) -> None:
    """What Grafana's import does with it: each ${DS_TILLPULSE} becomes the chosen uid."""
    shared = board.for_import()
    (source,) = shared.pop("__inputs")
    assert (source["type"], source["pluginId"]) == ("datasource", "influxdb")
    requires = {(r["type"], r["id"]) for r in shared.pop("__requires")}
    panels = {("panel", panel["type"]) for panel in shared["panels"]}
    assert {("grafana", "grafana"), ("datasource", "influxdb")} | panels == requires
    imported = json.loads(json.dumps(shared).replace(f"${{{source['name']}}}", "their-influx"))
    assert imported == board.json(datasource_uid="their-influx")


def test_generate_writes_every_file_and_check_then_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 1  # nothing there yet
    assert main(["generate", "--out", str(tmp_path)]) == 0
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 0
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()}
    assert written == set(artefacts())
    for relative in written:  # every file parses as JSON (the YAML ones after their comment)
        text = (tmp_path / relative).read_text(encoding="utf-8")
        json.loads(text.split("\n", 1)[1] if text.startswith("#") else text)


def test_check_names_an_edited_file_and_a_left_over_dashboard(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["generate", "--out", str(tmp_path)])
    edited = tmp_path / "json/tillpulse-fleet.json"
    edited.write_text(edited.read_text().replace("Fleet overview", "Fleet"), encoding="utf-8")
    (tmp_path / "json/old-board.json").write_text("{}", encoding="utf-8")
    capsys.readouterr()
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "json/tillpulse-fleet.json" in err and "json/old-board.json" in err
    assert "provisioning" not in err


def test_generate_into_an_unwritable_place_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert main(["generate", "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tillpulse dashboards generate:") and err.count("\n") == 1
