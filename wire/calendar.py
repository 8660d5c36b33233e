"""The operator calendar: trading days that are not like the others, in a TOML file.

What the operator knows and the history cannot: a sale, a public holiday, a site
closed for a day. The cloud's volume detectors read it as context (a surge on a
sale day is news, not an incident); the firmware simulator writes the calendar of
the days it shapes, so a simulated fleet is judged as an operator's would be.

    [[day]]
    kind = "sale"                 # sale | holiday | closed
    dates = [2026-11-27]          # TOML dates (UTC days), one or more
    name = "Black Friday"         # optional: quoted in alerts
    sites = ["site-003"]          # optional: only these sites
    mccs = ["5411"]               # optional: only these merchant categories

An entry with neither ``sites`` nor ``mccs`` is for the whole fleet; with both,
for the sites listed and every site of the categories listed.
"""

from __future__ import annotations

import datetime as dt
import enum
import tomllib
from pathlib import Path
from typing import Final

import msgspec

from wire.timestamps import NS_PER_DAY

_EPOCH: Final = dt.date(1970, 1, 1)


class DayKind(enum.StrEnum):
    SALE = "sale"  # more payments than usual are expected
    HOLIDAY = "holiday"  # trading differs from the usual day of the week
    CLOSED = "closed"  # no trading expected


class CalendarDay(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    kind: DayKind
    dates: list[dt.date]
    name: str = ""
    sites: list[str] = msgspec.field(default_factory=list)
    mccs: list[str] = msgspec.field(default_factory=list)

    def applies(self, site: str, mcc: str) -> bool:
        if not self.sites and not self.mccs:
            return True
        return site in self.sites or mcc in self.mccs


class Calendar(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    day: list[CalendarDay] = msgspec.field(default_factory=list)

    def on(self, site: str, mcc: str, ts_ns: int) -> CalendarDay | None:
        """The entry that covers this site at this time (the first listed), if any."""
        date = _EPOCH + dt.timedelta(days=ts_ns // NS_PER_DAY)
        for entry in self.day:
            if date in entry.dates and entry.applies(site, mcc):
                return entry
        return None

    def to_toml(self) -> str:
        """The calendar as a file `load_calendar` reads back."""
        blocks = []
        for entry in self.day:
            lines = [
                "[[day]]",
                f'kind = "{entry.kind.value}"',
                f"dates = [{', '.join(d.isoformat() for d in entry.dates)}]",
            ]
            if entry.name:
                lines.append(f"name = {_toml_string(entry.name)}")
            for key, values in (("sites", entry.sites), ("mccs", entry.mccs)):
                if values:
                    lines.append(f"{key} = [{', '.join(_toml_string(v) for v in values)}]")
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"


def _toml_string(text: str) -> str:
    return msgspec.json.encode(text).decode()  # a JSON string is a TOML basic string


def load_calendar(path: Path) -> Calendar:
    """Read a calendar file; raises ValueError with one line naming the file and the fault."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return msgspec.convert(document, Calendar)
    except OSError as exc:
        raise ValueError(f"calendar {path}: cannot read it ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"calendar {path}: not valid TOML ({exc})") from None
    except msgspec.ValidationError as exc:
        raise ValueError(
            f"calendar {path}: {exc} (each [[day]] needs kind = sale|holiday|closed and "
            "dates = [YYYY-MM-DD, ...]; optional name, sites, mccs)"
        ) from None
