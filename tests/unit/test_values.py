"""Decoders for Debezium's representations of PostgreSQL types: examples and properties."""

from __future__ import annotations

# date-lint: recorded file — a parser's inputs and outputs (one moment written as Debezium writes it); the decoders
# never compare a value with now, so these dates cannot expire.
from datetime import UTC, date, datetime, time, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.values import (
    TstzRange,
    parse_date,
    parse_time,
    parse_timestamptz,
    parse_tstzrange,
)

T0 = datetime(2026, 11, 24, 13, 45, 52, 638071, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '["2026-11-24 13:45:52.638071+00","2026-11-24 15:15:52.638071+00")',
            TstzRange(T0, T0 + timedelta(hours=1, minutes=30), "[)"),
        ),
        ('("2026-11-24 13:45:52.638071+00",)', TstzRange(T0, None, "()")),
        ('(,"2026-11-24 13:45:52.638071+00"]', TstzRange(None, T0, "(]")),
        ("(,)", TstzRange(None, None, "()")),
        ('[-infinity,"2026-11-24 13:45:52.638071+00")', TstzRange(None, T0, "()")),
        ('["2026-11-24 13:45:52.638071+00",infinity)', TstzRange(T0, None, "[)")),
        (
            '["2026-11-24 15:45:52.638071+02","2026-11-24 19:15:52.638071+05:30"]',
            TstzRange(T0, T0 + timedelta(minutes=0), "[]"),
        ),
        ("empty", TstzRange(None, None, "[)", empty=True)),
        ('  ["2026-11-24 13:45:52.638071+00","2026-11-24 13:45:52.638071+00"]  ', TstzRange(T0, T0, "[]")),
        ('[2026-11-24T13:45:52.638071Z,"2026-11-24 13:45:52.638071+00"]', TstzRange(T0, T0, "[]")),
    ],
)
def test_range_examples(text: str, expected: TstzRange) -> None:
    assert parse_tstzrange(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("garbage", "not a range literal"),
        ('["2026-11-24 13:45:52+00")', "no ','"),
        ('["2026-11-24 13:45:52+00,)', "unterminated quote"),
        ('["2026-11-25 00:00:00+00","2026-11-24 00:00:00+00")', "after its upper bound"),
        ('["2026-11-24 00:00:00","2026-11-25 00:00:00+00")', "no time zone"),
        ('["0044-03-15 00:00:00+00 BC","2026-11-25 00:00:00+00")', "BC"),
        ('["not a time","2026-11-25 00:00:00+00")', "not an ISO-8601"),
        ('["2026-11-24 00:00:00+00","2026-11-25 00:00:00+00")x', "not a range literal"),
    ],
)
def test_range_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tstzrange(text)


def test_range_rejects_non_strings() -> None:
    with pytest.raises(ValueError, match="expected a range string, got int"):
        parse_tstzrange(42)


# ---- properties ----------------------------------------------------------------------------------

offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(min_value=datetime(1901, 1, 1), max_value=datetime(9998, 12, 31), timezones=st.just(UTC))


def pg_text(value: datetime, zone: timezone) -> str:
    """How PostgreSQL prints a timestamptz in a session whose TimeZone has that offset."""
    local = value.astimezone(zone)
    text = local.strftime("%Y-%m-%d %H:%M:%S")
    if local.microsecond:
        text += f".{local.microsecond:06d}".rstrip("0")
    offset = local.utcoffset()
    assert offset is not None
    minutes = int(offset.total_seconds()) // 60
    sign = "+" if minutes >= 0 else "-"
    hours, mins = divmod(abs(minutes), 60)
    return f"{text}{sign}{hours:02d}" + (f":{mins:02d}" if mins else "")


@given(instants, instants, st.sampled_from(["[)", "[]", "()", "(]"]), offsets, offsets)
def test_range_round_trips_through_postgres_text(
    a: datetime, b: datetime, bounds: str, zone_a: timezone, zone_b: timezone
) -> None:
    lower, upper = min(a, b), max(a, b)
    text = f'{bounds[0]}"{pg_text(lower, zone_a)}","{pg_text(upper, zone_b)}"{bounds[1]}'
    parsed = parse_tstzrange(text)
    assert parsed == TstzRange(lower, upper, bounds)  # type: ignore[arg-type]
    assert parse_tstzrange(parsed.to_postgres()) == parsed


@given(instants, offsets)
def test_timestamptz_parses_postgres_and_iso_forms(value: datetime, zone: timezone) -> None:
    assert parse_timestamptz(pg_text(value, zone)) == value
    assert parse_timestamptz(value.astimezone(zone).isoformat()) == value
    assert parse_timestamptz(value.isoformat().replace("+00:00", "Z")) == value


grid = st.integers(min_value=0, max_value=12)


@st.composite
def grid_ranges(draw: st.DrawFn) -> TstzRange:
    lo, hi = sorted((draw(grid), draw(grid)))
    lower = None if draw(st.booleans()) and lo == 0 else T0 + timedelta(minutes=lo)
    upper = None if draw(st.booleans()) and hi == 12 else T0 + timedelta(minutes=hi)
    left = draw(st.sampled_from("[(")) if lower is not None else "("
    right = draw(st.sampled_from("])")) if upper is not None else ")"
    if lower is not None and upper is not None and lower == upper and f"{left}{right}" != "[]":
        return TstzRange(None, None, "[)", empty=True)  # PostgreSQL normalises these to empty
    return TstzRange(lower, upper, f"{left}{right}")  # type: ignore[arg-type]


@given(grid_ranges(), grid_ranges())
def test_overlap_is_symmetric_and_agrees_with_a_shared_instant(a: TstzRange, b: TstzRange) -> None:
    # ends lie on whole minutes, so probing every half minute (and beyond both ends) finds any shared instant
    probes = [T0 + timedelta(seconds=30 * k) for k in range(-2, 2 * 12 + 3)]
    shared = any(a.contains(p) and b.contains(p) for p in probes)
    assert a.overlaps(b) == b.overlaps(a) == shared


# ---- dates and times -----------------------------------------------------------------------------


@given(st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)))
def test_date_from_days_since_epoch(value: date) -> None:
    assert parse_date((value - date(1970, 1, 1)).days) == value
    assert parse_date(value.isoformat()) == value


@given(st.times())
def test_time_from_micros_since_midnight(value: time) -> None:
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    assert parse_time(micros) == value


@pytest.mark.parametrize(
    ("parser", "value", "message"),
    [
        (parse_time, 86_400_000_000, "out of range"),
        (parse_time, "25:00", "not an ISO time"),
        (parse_time, 1.5, "got float"),
        (parse_date, "2026-13-01", "not an ISO date"),
        (parse_date, True, "got bool"),
        (parse_timestamptz, "2026-11-24 10:00:00", "no time zone"),
        (parse_timestamptz, "infinity", "infinite timestamp"),
        (parse_timestamptz, 1795543341378, "expected a timestamp string"),
    ],
)
def test_scalar_errors(parser: object, value: object, message: str) -> None:
    assert callable(parser)
    with pytest.raises(ValueError, match=message):
        parser(value)
