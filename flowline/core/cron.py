"""Cron expressions and time zones of schedules: checking them and finding their ticks.

The ticks come from cronsim (not croniter, which fires a time that repeats on a fall-back day twice: the unique
``(schedule_id, scheduled_for)`` backstop cannot catch that, the two firings being different instants). cronsim
iterates in the schedule's own time zone, so daylight-saving changes behave as people expect:

- a time in a spring-forward gap fires once, at the end of the gap (``30 2 * * *`` in Europe/Berlin on
  2026-03-29 fires at 03:00+02:00);
- a time that repeats on a fall-back day fires once, at its first occurrence (02:30+02:00 on 2026-10-25);
- an expression with a wildcard hour follows elapsed time: ``0 * * * *`` ticks 23 times on a spring-forward day
  and 25 times on a fall-back day (both 02:00+02:00 and 02:00+01:00).

The time zones come from the pinned ``tzdata`` package before the host's zoneinfo, so the rules change with the
code, not with the machine.
"""

import zoneinfo
from collections.abc import Iterator
from datetime import datetime
from itertools import islice
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

# Time zones from the pinned tzdata package only, never the host's files (which may be older, or absent).
zoneinfo.reset_tzpath(to=[])

# The usual names, as five-field expressions (cronsim reads only the five fields).
NAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
MAX_CRON_CHARS = 200
MAX_TIMEZONE_CHARS = 64


class CronError(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


def expression(cron: str) -> str:
    """Return the five-field expression ``cron`` stands for (a name such as ``@daily``, or itself)."""
    return NAMES.get(cron.strip().lower(), cron.strip())


def check_cron(cron: str) -> None:
    """Raise CronError unless ``cron`` is a five-field expression or one of NAMES that ever fires."""
    if not 1 <= len(cron) <= MAX_CRON_CHARS:
        raise CronError(f"Must be a cron expression of 1 to {MAX_CRON_CHARS} characters.")
    expr = expression(cron)
    if expr.startswith("@"):
        raise CronError(f"Unknown name {cron!r}: use five fields or one of {', '.join(NAMES)}.")
    if len(expr.split()) != 5:
        raise CronError("Must have five fields (minute hour day-of-month month day-of-week), or be a name like @daily.")
    try:
        next(CronSim(expr, datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC"))))
    except (CronSimError, StopIteration, ValueError) as exc:
        raise CronError(f"Not a valid cron expression: {exc or 'it never fires'}.") from None


def zone(name: str) -> ZoneInfo:
    """Return the ZoneInfo of the IANA time zone ``name``; raise CronError for an unknown one."""
    if not 1 <= len(name) <= MAX_TIMEZONE_CHARS or name != name.strip() or name.startswith(("/", ".")):
        raise CronError("Must be an IANA time zone name, such as UTC or Europe/Berlin.")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"Unknown time zone {name!r}: use an IANA name, such as UTC or Europe/Berlin.") from None


def ticks_after(cron: str, timezone: str, after: datetime) -> Iterator[datetime]:
    """Iterate over the ticks of ``cron`` in ``timezone`` strictly after the aware datetime ``after``, as aware
    datetimes in that time zone."""
    return CronSim(expression(cron), after.astimezone(zone(timezone)))


def next_tick(cron: str, timezone: str, after: datetime) -> datetime:
    """Return the first tick of ``cron`` in ``timezone`` strictly after ``after``."""
    return next(ticks_after(cron, timezone, after))


def next_ticks(cron: str, timezone: str, after: datetime, count: int) -> list[datetime]:
    """Return the first ``count`` ticks strictly after ``after``."""
    return list(islice(ticks_after(cron, timezone, after), count))


def ticks_before(cron: str, timezone: str, before: datetime) -> Iterator[datetime]:
    """Iterate backwards over the ticks of ``cron`` in ``timezone`` strictly before ``before``, latest first."""
    return CronSim(expression(cron), before.astimezone(zone(timezone)), reverse=True)
