"""The console's words for a schedule's cron expression: the common shapes in words, anything that words might
misstate (cron ORs a day of the month with days of the week; steps of hours) left as the expression."""

import pytest

from flowline.console.cron_words import describe


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("* * * * *", "every minute"),
        ("*/15 * * * *", "every 15 minutes"),
        ("5 * * * *", "every hour at minute 05 (Asia/Kolkata)"),
        ("@hourly", "every hour at minute 00 (Asia/Kolkata)"),
        ("0 9 * * *", "every day at 09:00 Asia/Kolkata"),
        ("@daily", "every day at 00:00 Asia/Kolkata"),
        ("0 9 * * 1-5", "every weekday (Monday to Friday) at 09:00 Asia/Kolkata"),
        ("30 8 * * mon,thu", "every Monday and Thursday at 08:30 Asia/Kolkata"),
        ("0 18 * * 7", "every Sunday at 18:00 Asia/Kolkata"),
        ("@weekly", "every Sunday at 00:00 Asia/Kolkata"),
        ("0 0 1 * *", "on day 1 of every month at 00:00 Asia/Kolkata"),
        ("15 6 24 dec *", "every year on 24 December at 06:15 Asia/Kolkata"),
        ("0 9 1 * 1", None),
        ("0 */2 * * *", None),
        ("*/7 * * * *", None),
        ("0 9 1-7 * *", None),
        ("0 9,17 * * *", None),
        ("0 9 * * 1,1", None),
    ],
)
def test_a_cron_expression_in_words_only_where_unambiguous(expression, words):
    assert describe(expression, "Asia/Kolkata") == words
