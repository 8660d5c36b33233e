"""The committed dashboard and provisioning files are exactly what the code generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dashboards.cli import main
from dashboards.generate import PACKAGE_DIR, artefacts, stale


def test_the_committed_files_are_what_the_code_generates() -> None:
    assert stale(PACKAGE_DIR) == [], "run `tillpulse dashboards generate` and commit"


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
