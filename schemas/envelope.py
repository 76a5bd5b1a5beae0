"""Debezium change-event envelopes (JsonConverter, ``schemas.enable`` true or false) and their decoding.

``decode_message`` is the single entry point from Kafka bytes to a typed record; anything it cannot
decode raises :class:`~schemas.errors.CdcDecodeError` naming the topic, partition, offset and field.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from functools import cache, lru_cache
from typing import Annotated, Any, Generic, TypeVar, get_args
from uuid import UUID

import orjson
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from schemas.errors import CdcDecodeError
from schemas.rows import CAPTURED, Row
from schemas.values import TstzRange

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
            return orjson.loads(value)
        except orjson.JSONDecodeError:
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
    #: under REPLICA IDENTITY DEFAULT a delete's before-image holds only the primary key (the other columns
    #: are type defaults: "", epoch, false, null): then ``before`` is None and this holds the key columns
    before_key: dict[str, Any] | None = None
    source: Source
    op: Op
    ts_ms: int | None = None
    ts_us: int | None = None
    ts_ns: int | None = None
    transaction: TransactionBlock | None = None

    @property
    def before_available(self) -> bool:
        """False for an update or delete whose old row Debezium could not send (default replica identity):
        whatever needs the old row must read it elsewhere (the database, or state kept from earlier events)."""
        return self.before is not None or self.op not in (Op.UPDATE, Op.DELETE)

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


_WRAPPER = frozenset({"schema", "payload"})


def _unwrap(document: object) -> object:
    """Strip the ``{"schema": …, "payload": …}`` wrapper that ``schemas.enable=true`` adds."""
    if isinstance(document, dict) and len(document) == 2 and document.keys() == _WRAPPER:
        return document["payload"]
    return document


@lru_cache(maxsize=1024)  # a consumer reads a handful of topics, once per message each
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
            return _unwrap(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:  # invalid JSON or UTF-8, nesting past 1024 levels
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
    before = payload.get("before")
    if isinstance(before, dict) and _key_only(before, row_model):
        payload = {**payload, "before": None, "before_key": {k: before.get(k) for k in row_model.primary_key}}
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


_EPOCH = re.compile(r"1970-01-01T00:00:00(\.0+)?(Z|\+00:00)")


@cache
def _typed_columns(row_model: type[Row]) -> frozenset[str]:
    """Non-key columns holding uuids, instants or ranges: in a real row never "" and never the epoch."""

    def kinds(annotation: object) -> set[object]:
        found = {annotation}
        for arg in get_args(annotation):
            found |= kinds(arg)
        return found

    typed: set[str] = set()
    for name, info in row_model.model_fields.items():
        if name in row_model.primary_key:
            continue
        if kinds(info.annotation) & {UUID, datetime, TstzRange}:
            typed.add(name)
    return frozenset(typed)


def _key_only(before: dict[str, Any], row_model: type[Row]) -> bool:
    """A before-image that carries only the key (REPLICA IDENTITY DEFAULT). Debezium fills the other NOT NULL
    columns with their schema defaults — "" for a uuid or a range, the epoch for a timestamp, the column's
    DEFAULT where it has one — which no real row of a captured table holds in its uuid/instant/range columns."""
    if not all(before.get(k) not in (None, "") for k in row_model.primary_key):
        return False
    for name in _typed_columns(row_model):
        value = before.get(name)
        if value == "" or (isinstance(value, str) and _EPOCH.fullmatch(value)):
            return True
    return False


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
