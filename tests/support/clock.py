"""Times for test and bench data, always relative to now: a literal calendar date in a test expires (CI went red
on a fresh clone when a hold window written as a date had passed). ``make lint`` refuses new ones
(``tests/support/date_lint.py``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


def iso(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``, as the platform's JSON contexts and Debezium's timestamps write it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def iso_from_now(**delta: float) -> str:
    """Now plus ``timedelta(**delta)``, e.g. ``iso_from_now(minutes=-5)`` for an event created five minutes ago."""
    return iso(datetime.now(UTC) + timedelta(**delta))


def hold_window(hours_ahead: float = 24.0, hours_long: float = 2.0) -> tuple[str, str]:
    """A hold's ``(startAt, endAt)`` that is still valid when the message is consumed: by default a two-hour
    seating starting in a day, whole hours, so a window can be told from its neighbours."""
    start = (datetime.now(UTC) + timedelta(hours=hours_ahead)).replace(minute=0, second=0, microsecond=0)
    return iso(start), iso(start + timedelta(hours=hours_long))
