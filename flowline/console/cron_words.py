"""A schedule's cron expression in words, for the console, only where the words cannot mislead: the common shapes
(every minute, every N minutes, hourly, daily, on some weekdays, monthly, yearly at one time). Anything else (steps
in hours, ranges of days of the month, a day of the month together with days of the week, which cron joins with
OR) has no words, and the page shows the expression alone."""

import re

from ..core import cron

_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_DAY_NAMES = {name[:3].lower(): index for index, name in enumerate(_DAYS)}
_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_MONTH_NAMES = {name[:3].lower(): index for index, name in enumerate(_MONTHS, start=1)}
_NUMBER = re.compile(r"^\d{1,2}$")


def _number(field: str, low: int, high: int, names: dict[str, int] | None = None) -> int | None:
    """Return the one value ``field`` names (a number in low..high, or one of ``names``), else None."""
    if names is not None and field.lower() in names:
        return names[field.lower()]
    if _NUMBER.match(field) and low <= int(field) <= high:
        return int(field)
    return None


def _days_of_week(field: str) -> str | None:
    """Return the days of the week ``field`` names (one, a list, or 1-5) in words, else None."""
    if field == "1-5":
        return "weekday (Monday to Friday)"
    days = [_number(part, 0, 7, _DAY_NAMES) for part in field.split(",")]
    if not days or None in days or len(set(days)) != len(days):
        return None
    names = [_DAYS[day % 7] for day in days if day is not None]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def describe(expression: str, timezone: str) -> str | None:
    """Return ``expression`` (a valid cron expression or name) in ``timezone`` in words, such as "every day at
    09:00 Europe/Berlin", or None where words might mislead."""
    fields = cron.expression(expression).split()
    if len(fields) != 5:
        return None
    minute, hour, day, month, weekday = fields
    if fields == ["*"] * 5:
        return "every minute"
    step = re.fullmatch(r"\*/(\d{1,2})", minute)
    if step and [hour, day, month, weekday] == ["*"] * 4 and 1 < int(step[1]) < 60 and 60 % int(step[1]) == 0:
        return f"every {int(step[1])} minutes"
    at_minute = _number(minute, 0, 59)
    if at_minute is None:
        return None
    if [hour, day, month, weekday] == ["*"] * 4:
        return f"every hour at minute {at_minute:02d} ({timezone})"
    at_hour = _number(hour, 0, 23)
    if at_hour is None:
        return None
    at = f"at {at_hour:02d}:{at_minute:02d} {timezone}"
    if [day, month, weekday] == ["*"] * 3:
        return f"every day {at}"
    if [day, month] == ["*", "*"]:
        days = _days_of_week(weekday)
        return f"every {days} {at}" if days else None
    on_day = _number(day, 1, 31)
    if on_day is None or weekday != "*":
        return None
    if month == "*":
        return f"on day {on_day} of every month {at}"
    in_month = _number(month, 1, 12, _MONTH_NAMES)
    return f"every year on {on_day} {_MONTHS[in_month - 1]} {at}" if in_month else None
