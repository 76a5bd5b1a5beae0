"""Debezium change-event envelopes (JsonConverter, ``schemas.enable`` true or false) and their decoding.

``decode_message`` is the single entry point from Kafka bytes to a typed record; anything it cannot
decode raises :class:`~schemas.errors.CdcDecodeError` naming the topic, partition, offset and field.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from schemas.errors import CdcDecodeError
from schemas.rows import CAPTURED, Row

RowT = TypeVar("RowT", bound=Row)

HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"


class Op(StrEnum):
    CREATE = "c"
    UPDATE = "u"
    DELETE = "d"
    READ = "r"  # snapshot
    TRUNCATE = "t"
    MESSAGE = "m"


def _parse_sequence(value: object) -> object:
    """``source.sequence`` is a string holding a JSON array, e.g. ``[null,"26366032"]``."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"sequence is not a JSON array: {value!r}") from None
    return value


def _parse_snapshot(value: object) -> object:
    """``source.snapshot``: "true"/"false"/"last"/"first"/"incremental"… (a boolean in older versions)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


class Source(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    version: str
    connector: str
    name: str
    ts_ms: int
    ts_us: int | None = None
    ts_ns: int | None = None
    snapshot: Annotated[str, BeforeValidator(_parse_snapshot)] = "false"
    db: str
    sequence: Annotated[tuple[str | None, ...] | None, BeforeValidator(_parse_sequence)] = None
    schema_name: str = Field(alias="schema")
    table: str
    tx_id: int | None = Field(default=None, alias="txId")
    lsn: int | None = None
    xmin: int | None = None

    @property
    def is_snapshot(self) -> bool:
        return self.snapshot not in ("false", "")

    @property
    def qualified_table(self) -> str:
        return f"{self.schema_name}.{self.table}"


class TransactionBlock(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    total_order: int
    data_collection_order: int


class ChangeEvent(BaseModel, Generic[RowT]):
    """One row change. ``topic``/``partition``/``offset``/``key`` say where it was read from."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: dict[str, Any] | None = None
    before: RowT | None = None
    after: RowT | None = None
    source: Source
    op: Op
    ts_ms: int | None = None
    ts_us: int | None = None
    ts_ns: int | None = None
    transaction: TransactionBlock | None = None

    @property
    def row(self) -> RowT | None:
        """The row as it is after the change, or as it was before a delete."""
        return self.after if self.after is not None else self.before


@dataclass(frozen=True, slots=True)
class Tombstone:
    """The null-valued message Debezium writes after a delete, so compaction can drop the key."""

    topic: str
    partition: int | None
    offset: int | None
    key: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """A Debezium heartbeat: the connector is alive and streaming; it carries no row."""

    topic: str
    partition: int | None
    offset: int | None
    ts_ms: int | None


Record = ChangeEvent[Any] | Tombstone | Heartbeat


@cache
def _event_model(row_model: type[Row]) -> type[ChangeEvent[Any]]:
    return ChangeEvent[row_model]  # type: ignore[valid-type]


def _unwrap(document: object) -> object:
    """Strip the ``{"schema": …, "payload": …}`` wrapper that ``schemas.enable=true`` adds."""
    if isinstance(document, dict) and document.keys() == {"schema", "payload"}:
        return document["payload"]
    return document


def table_of_topic(topic: str) -> str:
    """``<prefix>.<schema>.<table>`` → ``<schema>.<table>`` (the prefix may itself contain dots)."""
    parts = topic.rsplit(".", 2)
    if len(parts) < 3:
        return topic
    return f"{parts[1]}.{parts[2]}"


def decode_message(
    topic: str,
    partition: int | None,
    offset: int | None,
    key: bytes | None,
    value: bytes | None,
    *,
    tables: Mapping[str, type[Row]] = CAPTURED,
) -> Record:
    """Decode one Kafka message written by Debezium's JsonConverter into a typed record."""

    def fail(field: str, reason: str) -> CdcDecodeError:
        return CdcDecodeError(topic=topic, partition=partition, offset=offset, field=field, reason=reason)

    def load(raw: bytes, field: str) -> object:
        try:
            return _unwrap(json.loads(raw))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail(field, f"not JSON: {exc}") from None

    key_doc = load(key, "key") if key is not None else None
    if key_doc is not None and not isinstance(key_doc, dict):
        raise fail("key", f"expected a JSON object, got {type(key_doc).__name__}")

    if topic.startswith(HEARTBEAT_TOPIC_PREFIX + "."):
        body = load(value, "value") if value is not None else {}
        ts = body.get("ts_ms") if isinstance(body, dict) else None
        return Heartbeat(topic, partition, offset, ts if isinstance(ts, int) else None)

    row_model = tables.get(table_of_topic(topic))
    if row_model is None:
        raise fail("topic", f"no row model for table {table_of_topic(topic)!r}")

    if value is None:
        return Tombstone(topic, partition, offset, key_doc)

    payload = load(value, "value")
    if not isinstance(payload, dict):
        raise fail("value", f"expected a JSON object envelope, got {type(payload).__name__}")
    try:
        return _event_model(row_model).model_validate(
            {**payload, "topic": topic, "partition": partition, "offset": offset, "key": key_doc}
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(part) for part in first["loc"]) or "value"
        reason = first["msg"]
        if first["type"] not in ("missing",):
            reason += f" (got {_short(first.get('input'))})"
        if exc.error_count() > 1:
            reason += f"; and {exc.error_count() - 1} more error(s)"
        raise fail(field, reason) from None


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
