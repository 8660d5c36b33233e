"""Both docs quote each Grafana alert rule's figures exactly as the code has them.

The figures (threshold, window, pending period) live in dashboards/alert_rules.py,
and each rule's ``fires_when`` sentence is built from them. A rule's row in
docs/dashboards.md and in docs/operations.md must quote that sentence and the
pending period, and state no other figure about the condition.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dashboards.alert_rules import RULES, AlertRule, span
from dashboards.macros import parse_duration_ms

DOCS = Path(__file__).parents[2] / "docs"
# the doc, and its table's cells (after the rule's name) that state when the rule fires
CONDITION_CELLS = {"dashboards.md": slice(1, 3), "operations.md": slice(1, 2)}


def row(doc: str, rule: AlertRule) -> list[str]:
    lines = (DOCS / doc).read_text(encoding="utf-8").splitlines()
    (line,) = (line for line in lines if line.startswith(f"| {rule.title} |"))
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


@pytest.mark.parametrize("doc", sorted(CONDITION_CELLS))
@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.uid)
def test_the_docs_quote_the_rules_threshold_window_and_pending_period(
    doc: str, rule: AlertRule
) -> None:
    said = " ".join(row(doc, rule)[CONDITION_CELLS[doc]])
    assert rule.fires_when in said, f"{doc}: {rule.title}: quote {rule.fires_when!r}"
    assert rule.pending_text in said, f"{doc}: {rule.title}: quote {rule.pending_text!r}"
    rest = said.replace(rule.fires_when, "").replace(rule.pending_text, "")
    assert not re.search(r"\d", rest), f"{doc}: {rule.title}: a figure not from the code: {rest}"


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.uid)
def test_the_quoted_sentence_has_the_rules_windows_and_grafana_its_pending_period(
    rule: AlertRule,
) -> None:
    for query in rule.queries:
        assert span(query.window_s) in rule.fires_when, (query.window_s, rule.fires_when)
    assert parse_duration_ms(rule.body()["for"]) == rule.pending_s * 1000
