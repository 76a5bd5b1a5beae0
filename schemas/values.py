"""Decoders for the value representations Debezium's JsonConverter gives PostgreSQL types.

- ``timestamptz`` → ISO-8601 string (``io.debezium.time.ZonedTimestamp``), e.g. ``2026-11-24T13:45:52.638071Z``;
- ``tstzrange`` → PostgreSQL's own text form, e.g. ``["2026-11-24 13:45:52+00","2026-11-24 15:15:52+00")``;
- ``jsonb`` → a string holding JSON (``io.debezium.data.Json``);
- ``date`` → days since the epoch, ``time`` → microseconds since midnight (``adaptive_time_microseconds``);
- an unchanged TOASTed value → the placeholder ``__debezium_unavailable_value``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any, Final, Literal
from uuid import UUID

import orjson
from pydantic import BeforeValidator, GetCoreSchemaHandler, PlainSerializer
from pydantic_core import core_schema

from schemas import deepjson

UNAVAILABLE_PLACEHOLDER: Final = "__debezium_unavailable_value"
_EPOCH_DATE: Final = date(1970, 1, 1)


class Unavailable:
    """A column Debezium could not send (unchanged TOASTed value). Compare with ``is UNAVAILABLE``."""

    _instance: Unavailable | None = None

    def __new__(cls) -> Unavailable:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNAVAILABLE"

    def __bool__(self) -> bool:
        return False

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.is_instance_schema(cls)


UNAVAILABLE: Final = Unavailable()


def is_unavailable(value: object) -> bool:
    """Debezium's placeholder, as a string or (for array columns) as a one-element array."""
    if value == UNAVAILABLE_PLACEHOLDER:
        return True
    return isinstance(value, list) and len(value) == 1 and value[0] == UNAVAILABLE_PLACEHOLDER


# ---- timestamps -------------------------------------------------------------------------------


def parse_timestamptz(value: object) -> datetime:
    """An aware datetime from Debezium's ZonedTimestamp string or PostgreSQL's text output."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no time zone")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a timestamp string, got {type(value).__name__}")
    text = value.strip()
    if text.endswith(" BC"):
        raise ValueError(f"BC timestamps are out of range: {text!r}")
    if text in ("infinity", "-infinity"):
        raise ValueError(f"infinite timestamp where a finite one is required: {text!r}")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {text!r}") from None
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp has no time zone: {text!r}")
    return parsed


def parse_date(value: object) -> date:
    """``io.debezium.time.Date`` (days since 1970-01-01) or an ISO date string."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return _EPOCH_DATE + timedelta(days=value)
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO date: {value!r}") from None
    raise ValueError(f"expected days since epoch or an ISO date, got {type(value).__name__}")


def parse_time(value: object) -> time:
    """``io.debezium.time.MicroTime`` (µs since midnight), ``Time`` (ms) is not used here, or an ISO time."""
    if isinstance(value, time):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < 86_400_000_000:
            raise ValueError(f"microseconds since midnight out of range: {value}")
        seconds, micros = divmod(value, 1_000_000)
        minutes, sec = divmod(seconds, 60)
        hours, minute = divmod(minutes, 60)
        return time(hours, minute, sec, micros)
    if isinstance(value, str):
        try:
            return time.fromisoformat(value)
        except ValueError:
            raise ValueError(f"not an ISO time: {value!r}") from None
    raise ValueError(f"expected microseconds since midnight or an ISO time, got {type(value).__name__}")


# ---- tstzrange -----------------------------------------------------------------------------------

Bounds = Literal["[)", "[]", "()", "(]"]


@dataclass(frozen=True, slots=True)
class TstzRange:
    """A PostgreSQL ``tstzrange``. ``None`` for an end means unbounded (or ``±infinity``)."""

    lower: datetime | None
    upper: datetime | None
    bounds: Bounds = "[)"
    empty: bool = False

    @classmethod
    def closed_open(cls, lower: datetime, upper: datetime) -> TstzRange:
        return cls(lower, upper, "[)")

    @property
    def lower_inc(self) -> bool:
        return self.bounds[0] == "[" and self.lower is not None

    @property
    def upper_inc(self) -> bool:
        return self.bounds[1] == "]" and self.upper is not None

    def contains(self, instant: datetime) -> bool:
        if self.empty:
            return False
        if self.lower is not None and (instant < self.lower or (instant == self.lower and not self.lower_inc)):
            return False
        return not (self.upper is not None and (instant > self.upper or (instant == self.upper and not self.upper_inc)))

    def overlaps(self, other: TstzRange) -> bool:
        """PostgreSQL's ``&&``."""
        if self.empty or other.empty:
            return False
        return _before_end(self, other) and _before_end(other, self)

    def to_postgres(self) -> str:
        """PostgreSQL's text form, as ``tstzrange_out`` prints it (UTC offsets)."""
        if self.empty:
            return "empty"
        lo = "" if self.lower is None else f'"{_pg_timestamp(self.lower)}"'
        hi = "" if self.upper is None else f'"{_pg_timestamp(self.upper)}"'
        left = "[" if self.lower_inc else "("
        right = "]" if self.upper_inc else ")"
        return f"{left}{lo},{hi}{right}"


def _before_end(a: TstzRange, b: TstzRange) -> bool:
    """a's lower end lies before b's upper end (so the two can share an instant)."""
    if a.lower is None or b.upper is None:
        return True
    if a.lower < b.upper:
        return True
    return a.lower == b.upper and a.lower_inc and b.upper_inc


def _pg_timestamp(value: datetime) -> str:
    utc = value.astimezone(UTC)
    text = utc.strftime("%Y-%m-%d %H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}".rstrip("0")
    return text + "+00"


def _split_range_body(body: str) -> tuple[str | None, str | None]:
    """Split ``lower,upper`` honouring PostgreSQL's quoting (``"…"``, ``\\x`` and ``""`` escapes)."""
    parts: list[str | None] = []
    i, n = 0, len(body)
    for position in range(2):
        if i >= n or body[i] == ",":
            parts.append(None)  # an empty bound: unbounded
        else:
            chars: list[str] = []
            quoted = False
            while i < n:
                ch = body[i]
                if ch == '"':
                    if quoted and i + 1 < n and body[i + 1] == '"':
                        chars.append('"')
                        i += 2
                        continue
                    quoted = not quoted
                    i += 1
                    continue
                if ch == "\\" and i + 1 < n:
                    chars.append(body[i + 1])
                    i += 2
                    continue
                if ch == "," and not quoted:
                    break
                chars.append(ch)
                i += 1
            if quoted:
                raise ValueError("unterminated quote in range")
            parts.append("".join(chars))
        if position == 0:
            if i >= n or body[i] != ",":
                raise ValueError("range has no ',' between its bounds")
            i += 1
    if i != n:
        raise ValueError(f"unexpected text after the upper bound: {body[i:]!r}")
    return parts[0], parts[1]


def _range_end(text: str | None, *, lower: bool) -> datetime | None:
    if text is None:
        return None
    token = text.strip()
    if token == ("-infinity" if lower else "infinity"):
        return None
    return parse_timestamptz(token)


def parse_tstzrange(value: object) -> TstzRange:
    if isinstance(value, TstzRange):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a range string, got {type(value).__name__}")
    text = value.strip()
    if text.lower() == "empty":
        return TstzRange(None, None, "[)", empty=True)
    if len(text) < 3 or text[0] not in "[(" or text[-1] not in "])":
        raise ValueError(f"not a range literal: {value!r}")
    lower_text, upper_text = _split_range_body(text[1:-1])
    lower = _range_end(lower_text, lower=True)
    upper = _range_end(upper_text, lower=False)
    if lower is not None and upper is not None and lower > upper:
        raise ValueError(f"range lower bound is after its upper bound: {value!r}")
    left = text[0] if lower is not None else "("
    right = text[-1] if upper is not None else ")"
    bounds: Bounds = f"{left}{right}"  # type: ignore[assignment]
    return TstzRange(lower, upper, bounds)


# ---- json ----------------------------------------------------------------------------------------


def parse_json_text(value: object) -> Any:
    """``io.debezium.data.Json``: a string holding JSON. Already-decoded values pass through."""
    if isinstance(value, str):
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in exc.msg:  # orjson stops at 1,024 levels; PostgreSQL's jsonb goes far deeper
                try:
                    return deepjson.loads(value)
                except ValueError as deep:
                    raise ValueError(f"jsonb column does not hold JSON: {deep}") from None
            raise ValueError(f"jsonb column does not hold JSON: {exc.msg} at {exc.pos}") from None
    return value


def _toastable(parse: Any) -> Any:
    def validator(value: object) -> object:
        if is_unavailable(value):
            return UNAVAILABLE
        return parse(value)

    return validator


def _plain_unavailable(value: object) -> object:
    return UNAVAILABLE if is_unavailable(value) else value


Timestamptz = Annotated[datetime, BeforeValidator(parse_timestamptz)]
PgDate = Annotated[date, BeforeValidator(parse_date)]
PgTime = Annotated[time, BeforeValidator(parse_time)]
Range = Annotated[
    TstzRange,
    BeforeValidator(parse_tstzrange),
    PlainSerializer(lambda r: r.to_postgres(), return_type=str),
]
Json = Annotated[Any, BeforeValidator(parse_json_text)]
#: a jsonb column that Debezium may send as the unavailable placeholder
ToastJson = Annotated[Any, BeforeValidator(_toastable(parse_json_text))]
#: a uuid[] column that Debezium may send as the unavailable placeholder
ToastUuids = Annotated[list[UUID] | Unavailable, BeforeValidator(_plain_unavailable)]
#: a text column that Debezium may send as the unavailable placeholder
ToastText = Annotated[str | Unavailable, BeforeValidator(_plain_unavailable)]
