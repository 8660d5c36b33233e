"""From findings to alerts: one alert per incident, not one per window.

Detectors report every anomalous subject in every window; `AlertManager`
turns that stream into alert messages, keyed by `Finding.key`:

- a key with no open alert fires a new alert (``firing``), with an id derived
  from the key and the window it opened in, so replaying the same data gives
  the same ids (and the same InfluxDB points);
- the key again while open: nothing (deduplicated), but the peak score is
  kept, and a higher severity fires the same alert again at that severity;
- an open key absent for ``clear_windows`` consecutive windows: ``resolved``,
  same alert id, at the end of the window it cleared in;
- cooldown (flapping suppression): for ``cooldown_s`` after a resolve, the key
  firing again at the same or a lower severity is muted (counted as
  suppressed, nothing emitted). Once the cooldown is over, a key still (or
  again) reported fires a new alert, with a new id. So a condition flapping
  on and off gives at most one firing/resolved pair per cooldown, however often
  it flaps; a condition that comes back and stays is announced at the latest
  ``cooldown_s`` after the resolve. A re-fire at a higher severity than the
  resolved alert's is not muted: it fires a new alert at once.

Windows count as processed windows (calls to `step`), not as wall time.

With a ``state_path``, the open and cooling incidents are saved after every
step (JSON, tmp + fsync + rename) and loaded at start, so a job run once per
window from cron keeps deduplicating and resolving across runs.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import msgspec

from cloud.detectors.findings import SUMMARY_MAX, Finding
from runtime.logs import kv
from runtime.statefile import UnreadableState, read_state, set_aside, write_state
from wire.errors import MessageDecodeError
from wire.messages import Alert, AlertStatus, Severity, decode_as, encode
from wire.timestamps import NS_PER_S

log = logging.getLogger(__name__)

STATE_VERSION: Final = 1
_RANK: Final = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}

Key = tuple[str, str, str, str, str]


class AlertStats(msgspec.Struct, kw_only=True):
    fired: int = 0  # new firing alerts
    escalated: int = 0  # an open alert fired again at a higher severity
    resolved: int = 0
    deduplicated: int = 0  # findings for an alert already open
    suppressed: int = 0  # findings muted by the cooldown after a resolve
    invalid: int = 0  # alerts the wire contract refused (a PAN-like summary...): skipped
    state_corrupt: int = 0  # unreadable state files moved aside
    state_save_failures: int = 0


class _Incident(msgspec.Struct, kw_only=True):
    """One key's open alert, or its resolved alert while the cooldown runs."""

    key: Key
    alert_id: str
    detector: str  # the latest finding's
    severity: Severity  # the highest published
    score: float  # the highest seen
    opened_ns: int  # end of the window it fired in
    windows_seen: int = 1
    absent: int = 0  # consecutive windows without a finding
    resolved_ns: int | None = None  # set: resolved, muted until resolved_ns + cooldown
    suppressed: int = 0  # findings muted since the resolve


class _State(msgspec.Struct, kw_only=True):
    version: int
    last_window_ns: int | None = None
    incidents: list[_Incident] = msgspec.field(default_factory=list)


class AlertManager:
    def __init__(
        self, *, clear_windows: int = 2, cooldown_s: float = 1800, state_path: Path | None
    ) -> None:
        if clear_windows < 1:
            raise ValueError(f"clear_windows must be at least 1, got {clear_windows}")
        if cooldown_s < 0:
            raise ValueError(f"cooldown_s must not be negative, got {cooldown_s}")
        self.clear_windows = clear_windows
        self.cooldown_ns = int(cooldown_s * NS_PER_S)
        self.stats = AlertStats()
        self._state_path = state_path
        self._last_window_ns: int | None = None
        self._incidents: dict[Key, _Incident] = {}
        if state_path is not None:
            self._load(state_path)

    @property
    def last_window_ns(self) -> int | None:
        """End of the last window processed: the next `step` must be later."""
        return self._last_window_ns

    @property
    def open_alerts(self) -> int:
        return sum(i.resolved_ns is None for i in self._incidents.values())

    def step(self, window_end_ns: int, findings: Sequence[Finding]) -> list[Alert]:
        """The alerts to emit for the window ending at ``window_end_ns``."""
        if self._last_window_ns is not None and window_end_ns <= self._last_window_ns:
            raise ValueError(
                f"window ending {_iso(window_end_ns)} is not after the last one processed "
                f"({_iso(self._last_window_ns)}): windows go in time order, each once"
            )
        alerts: list[Alert] = []
        seen: set[Key] = set()
        for finding in findings:
            seen.add(finding.key)
            alert = self._on_finding(window_end_ns, finding)
            if alert is not None:
                alerts.append(alert)
        for key, incident in list(self._incidents.items()):
            if key in seen:
                continue
            if incident.resolved_ns is None:
                incident.absent += 1
                resolved = self._resolve(window_end_ns, incident)
                if resolved is not None:
                    alerts.append(resolved)
            elif window_end_ns >= incident.resolved_ns + self.cooldown_ns:
                self._forget(incident)
        self._last_window_ns = window_end_ns
        if self._state_path is not None:
            self._save(self._state_path)
        return alerts

    def _on_finding(self, window_end_ns: int, finding: Finding) -> Alert | None:
        incident = self._incidents.get(finding.key)
        if incident is None:
            return self._open(window_end_ns, finding)
        if incident.resolved_ns is not None:  # cooling down after a resolve
            muted = window_end_ns < incident.resolved_ns + self.cooldown_ns
            if muted and _RANK[finding.severity] <= _RANK[incident.severity]:
                incident.suppressed += 1
                self.stats.suppressed += 1
                return None
            self._forget(incident)
            return self._open(window_end_ns, finding)
        incident.absent = 0
        incident.windows_seen += 1
        incident.score = max(incident.score, finding.score)
        incident.detector = finding.detector
        if _RANK[finding.severity] <= _RANK[incident.severity]:
            self.stats.deduplicated += 1
            return None
        alert = self._checked(_alert(incident.alert_id, finding, score=incident.score))
        if alert is not None:
            incident.severity = finding.severity
            self.stats.escalated += 1
        return alert

    def _open(self, window_end_ns: int, finding: Finding) -> Alert | None:
        alert = self._checked(_alert(alert_id(finding.key, window_end_ns), finding))
        if alert is None:
            return None
        self._incidents[finding.key] = _Incident(
            key=finding.key,
            alert_id=alert.alert_id,
            detector=finding.detector,
            severity=finding.severity,
            score=alert.score,
            opened_ns=window_end_ns,
        )
        self.stats.fired += 1
        return alert

    def _forget(self, incident: _Incident) -> None:
        """The cooldown after ``incident``'s resolve is over: the key may fire anew."""
        del self._incidents[incident.key]
        if incident.suppressed:
            log.info(
                "alert_cooldown_over",
                extra=kv(alert_id=incident.alert_id, suppressed=incident.suppressed),
            )

    def _resolve(self, window_end_ns: int, incident: _Incident) -> Alert | None:
        """Resolve ``incident`` once it was absent for ``clear_windows`` windows."""
        if incident.absent < self.clear_windows:
            return None
        kind, site, device, acquirer, _ = incident.key
        summary = (
            f"{kind} cleared: not reported for {incident.absent} consecutive windows; it had "
            f"been firing for {_duration(window_end_ns - incident.opened_ns)} since "
            f"{_iso(incident.opened_ns)}, reported in {incident.windows_seen} windows, "
            f"peak score {incident.score:.2f}"
        )
        alert = self._checked(
            Alert(
                alert_id=incident.alert_id,
                ts=window_end_ns,
                type=kind,
                severity=incident.severity,
                status=AlertStatus.RESOLVED,
                site=site or None,
                device=device or None,
                acquirer=acquirer or None,
                score=incident.score,
                detector=incident.detector,
                summary=summary,
            )
        )
        # resolved even when the message was refused: it could never be sent
        incident.resolved_ns = window_end_ns
        if alert is not None:
            self.stats.resolved += 1
        return alert

    def _checked(self, alert: Alert) -> Alert | None:
        """``alert`` if the wire contract accepts it (ids, ranges, PAN guard), else None.

        A Struct is not validated when built: a round trip through the codec is.
        """
        try:
            decode_as(encode(alert), Alert)
        except (MessageDecodeError, msgspec.EncodeError) as exc:
            self.stats.invalid += 1
            log.error(
                "alert_invalid",
                extra=kv(alert_id=alert.alert_id, type=alert.type, error=str(exc)),
            )
            return None
        return alert

    def _load(self, path: Path) -> None:
        try:
            state = read_state(path, _State, what="alert")
        except UnreadableState:
            self.stats.state_corrupt += 1
            return
        if state is None:
            return
        if state.version != STATE_VERSION:
            self.stats.state_corrupt += 1
            set_aside(path, f"unknown state version {state.version}", what="alert")
            return
        self._last_window_ns = state.last_window_ns
        self._incidents = {incident.key: incident for incident in state.incidents}

    def _save(self, path: Path) -> None:
        state = _State(
            version=STATE_VERSION,
            last_window_ns=self._last_window_ns,
            incidents=list(self._incidents.values()),
        )
        try:
            write_state(path, state)
        except OSError as exc:
            # the alerts of this window still go out; the next run may repeat some
            self.stats.state_save_failures += 1
            log.error("alert_state_save_failed", extra=kv(path=str(path), error=str(exc)))


def alert_id(key: Key, opened_ns: int) -> str:
    """``{type}.{hash}``: the same incident (key, opening window) always gets the same id.

    The hash is base32 (letters and 2-7), so an id never holds a long decimal run
    that the PAN guard would refuse.
    """
    digest = hashlib.blake2b(msgspec.json.encode([*key, opened_ns]), digest_size=15).digest()
    return f"{key[0]}.{base64.b32encode(digest).decode().lower()}"


def _alert(alert_id: str, finding: Finding, *, score: float | None = None) -> Alert:
    return Alert(
        alert_id=alert_id,
        ts=finding.ts,
        type=finding.type,
        severity=finding.severity,
        status=AlertStatus.FIRING,
        site=finding.site,
        device=finding.device,
        acquirer=finding.acquirer,
        score=finding.score if score is None else score,
        detector=finding.detector,
        summary=finding.summary[:SUMMARY_MAX],
    )


def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS_PER_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _duration(ns: int) -> str:
    minutes, seconds = divmod(max(ns, 0) // NS_PER_S, 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{seconds:02d}s" if minutes else f"{seconds}s"
