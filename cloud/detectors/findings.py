"""What a detector reports for one window: a `Finding`, before alert bookkeeping.

A detector looks at one window of data and returns a finding for every
subject (terminal, site, acquirer, card) that is anomalous *in that window*.
It does not remember what it said before: turning findings into alerts
(deduplication, cooldown, the resolve message when a subject is no longer
reported) is `cloud.jobs.alert_lifecycle`'s job.

The subject of a finding is its key: (type, site, device, acquirer). A
terminal finding has site and device; a site finding has the site only; an
acquirer finding has the acquirer only (fleet-wide); a card finding (card
velocity) has none of them and names the card token in ``subject``.
"""

from __future__ import annotations

from typing import Final

import msgspec

from wire.messages import Severity

Evidence = dict[str, float | int | str]

SUMMARY_MAX: Final = 2000  # wire.messages.Alert.summary


class Finding(msgspec.Struct, kw_only=True, frozen=True):
    type: str  # the alert type, an id: "card_testing", "terminal_offline", ...
    detector: str  # which detector said so, an id: "fraud.card_testing"
    severity: Severity
    score: float  # 0..1, how sure / how far out
    ts: int  # ns: the end of the window the finding is about
    summary: str  # what was seen, against which baseline (for people)
    site: str | None = None
    device: str | None = None
    acquirer: str | None = None
    subject: str | None = None  # another subject (a card token) when none of the above
    evidence: Evidence = msgspec.field(default_factory=dict)  # the figures behind the summary

    @property
    def key(self) -> tuple[str, str, str, str, str]:
        """Identity across windows: the same key in the next window is the same incident.

        A finding with a ``subject`` (a card) is identified by it alone: where the
        card was seen last changes from window to window."""
        if self.subject is not None:
            return (self.type, "", "", "", self.subject)
        return (
            self.type,
            self.site or "",
            self.device or "",
            self.acquirer or "",
            self.subject or "",
        )
