"""The next-tick function of schedules (flowline/core/cron.py) and the worker's choice of due ticks
(flowline/worker/schedules.py ``due_ticks``): daylight-saving days in two time zones, names, bad input, catch-up."""

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from flowline.core import cron
from flowline.worker.schedules import CATCHUP_MAX, due_ticks

UTC = UTC


def day_ticks(expr, tz, day):
    """Every tick of ``expr`` on the local calendar day ``day`` (a date) in ``tz``, as ISO strings."""
    zone = cron.zone(tz)
    start = datetime(day.year, day.month, day.day, tzinfo=zone) - timedelta(microseconds=1)
    end = datetime(day.year, day.month, day.day, tzinfo=zone) + timedelta(days=1)
    ticks = []
    for tick in cron.ticks_after(expr, tz, start):
        if tick.astimezone(zone).date() != day:
            break
        ticks.append(tick.isoformat())
    assert all(datetime.fromisoformat(t) < end for t in ticks)
    return ticks


# Spring-forward and fall-back days of 2026: Europe/Berlin 03-29 (02:00 -> 03:00) and 10-25 (03:00 -> 02:00);
# America/New_York 03-08 (02:00 -> 03:00) and 11-01 (02:00 -> 01:00).
SPRING = {"Europe/Berlin": (datetime(2026, 3, 29).date(), "2026-03-29T03:00:00+02:00")}
SPRING["America/New_York"] = (datetime(2026, 3, 8).date(), "2026-03-08T03:00:00-04:00")


@pytest.mark.parametrize("tz", ["Europe/Berlin", "America/New_York"])
def test_a_time_in_the_spring_forward_gap_fires_once_at_the_end_of_the_gap(tz):
    day, end_of_gap = SPRING[tz]
    assert day_ticks("30 2 * * *", tz, day) == [end_of_gap]
    # The days around fire at 02:30 as usual.
    assert day_ticks("30 2 * * *", tz, day + timedelta(days=1))[0].startswith(f"{day + timedelta(days=1)}T02:30:00")


@pytest.mark.parametrize(
    "tz, day, expr, first",
    [
        ("Europe/Berlin", datetime(2026, 10, 25).date(), "30 2 * * *", "2026-10-25T02:30:00+02:00"),
        ("America/New_York", datetime(2026, 11, 1).date(), "30 1 * * *", "2026-11-01T01:30:00-04:00"),
    ],
)
def test_a_time_that_repeats_on_the_fall_back_day_fires_once_at_its_first_occurrence(tz, day, expr, first):
    assert day_ticks(expr, tz, day) == [first]


@pytest.mark.parametrize(
    "tz, spring, fall, repeated",
    [
        ("Europe/Berlin", datetime(2026, 3, 29).date(), datetime(2026, 10, 25).date(), "02:00:00"),
        ("America/New_York", datetime(2026, 3, 8).date(), datetime(2026, 11, 1).date(), "01:00:00"),
    ],
)
def test_a_wildcard_hour_follows_elapsed_time(tz, spring, fall, repeated):
    spring_ticks = day_ticks("0 * * * *", tz, spring)
    fall_ticks = day_ticks("0 * * * *", tz, fall)
    assert len(spring_ticks) == 23 and len(fall_ticks) == 25
    # Both occurrences of the repeated hour fire, an hour apart.
    twice = [t for t in fall_ticks if f"T{repeated}" in t]
    assert len(twice) == 2
    a, b = (datetime.fromisoformat(t) for t in twice)
    assert b - a == timedelta(hours=1)
    # Elapsed time: every tick an hour after the one before.
    instants = [datetime.fromisoformat(t) for t in spring_ticks + fall_ticks]
    for ticks in (spring_ticks, fall_ticks):
        at = [datetime.fromisoformat(t) for t in ticks]
        assert all(later - earlier == timedelta(hours=1) for earlier, later in itertools.pairwise(at))
    assert len(set(instants)) == 48


@pytest.mark.parametrize(
    "name, expr",
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_names_stand_for_their_five_fields(name, expr):
    cron.check_cron(name)
    after = datetime(2026, 5, 17, 13, 7, tzinfo=UTC)
    assert cron.next_ticks(name, "Europe/Berlin", after, 3) == cron.next_ticks(expr, "Europe/Berlin", after, 3)


@pytest.mark.parametrize(
    "expr", ["", "* * * *", "* * * * * *", "61 * * * *", "* 24 * * *", "0 0 30 2 *", "@reboot", "@every 5m", "x" * 201]
)
def test_bad_expressions_are_refused(expr):
    with pytest.raises(cron.CronError):
        cron.check_cron(expr)


@pytest.mark.parametrize("name", ["", "Mars/Olympus_Mons", "../../etc/passwd", "/etc/localtime", " UTC", "x" * 65])
def test_unknown_time_zones_are_refused(name):
    with pytest.raises(cron.CronError):
        cron.zone(name)


def test_time_zones_come_from_the_pinned_tzdata_package():
    import zoneinfo

    assert zoneinfo.TZPATH == ()
    assert cron.zone("America/New_York").key == "America/New_York"


# --- due_ticks: which ticks a worker fires for a due schedule ---------------------------------------------------

NOW = datetime(2026, 6, 1, 12, 0, 30, tzinfo=UTC)


def schedule(catchup, next_fire_at, expr="* * * * *"):
    return {"cron": expr, "timezone": "UTC", "catchup": catchup, "next_fire_at": next_fire_at}


@pytest.mark.parametrize("catchup", ["none", "last", "all"])
def test_a_tick_within_the_grace_fires_as_itself_whatever_the_catchup(catchup):
    ticks, truncated, after = due_ticks(schedule(catchup, NOW - timedelta(seconds=30)), NOW, 60)
    assert ticks == [NOW - timedelta(seconds=30)] and not truncated
    assert after == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)


def test_missed_ticks_follow_the_catchup_policy():
    since = NOW - timedelta(minutes=10, seconds=30)  # 11:50:00: 11 ticks due, 11:50 .. 12:00
    on_time = [datetime(2026, 6, 1, 12, 0, tzinfo=UTC)]  # within 60 s of NOW
    none, _, _ = due_ticks(schedule("none", since), NOW, 60)
    last, _, _ = due_ticks(schedule("last", since), NOW, 60)
    every, truncated, after = due_ticks(schedule("all", since), NOW, 60)
    assert none == on_time
    assert last == [datetime(2026, 6, 1, 11, 59, tzinfo=UTC), *on_time]
    assert every == [since + timedelta(minutes=i) for i in range(11)] and not truncated
    assert after == datetime(2026, 6, 1, 12, 1, tzinfo=UTC)


def test_catchup_all_is_bounded_to_the_latest_ticks():
    since = NOW - timedelta(days=1)
    ticks, truncated, _ = due_ticks(schedule("all", since), NOW, 60)
    assert len(ticks) == CATCHUP_MAX + 1 and truncated  # the latest CATCHUP_MAX missed ticks, and 12:00 on time
    assert ticks[-1] == datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert ticks == sorted(ticks) and len(set(ticks)) == len(ticks)
