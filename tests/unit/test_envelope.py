"""Decoding real captured Debezium messages (both JsonConverter modes), and every way bad input is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from schemas import UNAVAILABLE, CdcDecodeError, ChangeEvent, Heartbeat, Op, Tombstone, TstzRange, decode_message
from schemas.rows import Allocation, Booking, BookingStatus, ObservabilityEvent, ResourceType
from tests.support.cdc import RawMessage

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "debezium"


def load(path: Path) -> list[RawMessage]:
    return [RawMessage.from_fixture(doc) for doc in json.loads(path.read_text())]


ALL_FIXTURES = sorted(FIXTURES.glob("*/*.json"))


def test_fixtures_are_present() -> None:
    names = {p.name for p in ALL_FIXTURES}
    assert len(names) >= 9, "captured fixtures are missing; regenerate with ALLOCGUARD_CAPTURE_DIR"


@pytest.mark.parametrize("path", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_captured_message_decodes(path: Path) -> None:
    for message in load(path):
        record = message.decode()
        if message.value is None:
            assert isinstance(record, Tombstone)
            assert record.key is not None
        elif message.topic.startswith("__debezium-heartbeat"):
            assert isinstance(record, Heartbeat)
            assert record.ts_ms is not None
        else:
            assert isinstance(record, ChangeEvent)
            assert record.topic == message.topic
            assert record.offset == message.offset
            assert record.source.connector == "postgresql"
            assert record.source.version.startswith("3.")
            if record.op is Op.DELETE:
                # REPLICA IDENTITY DEFAULT: the key only, typed as "before image not available"
                assert record.row is None
                assert not record.before_available
                assert record.before_key is not None
                assert all(record.before_key.values())
            elif record.op is not Op.TRUNCATE:
                assert record.row is not None


def test_allocation_lifecycle_fields() -> None:
    created, updated, deleted, tombstone = (
        m.decode() for m in load(FIXTURES / "schemas_off/allocations_lifecycle.json")
    )
    assert isinstance(created, ChangeEvent)
    assert isinstance(created.after, Allocation)
    window = created.after.window
    assert window.bounds == "[)"
    assert window.lower is not None
    assert window.upper is not None
    assert window.upper - window.lower == __import__("datetime").timedelta(hours=2)
    assert created.after.resource_type is ResourceType.TABLE
    assert created.after.shadow is False
    assert created.key == {"id": str(created.after.id)}
    assert created.source.sequence is not None
    assert len(created.source.sequence) == 2
    assert created.source.lsn is not None
    assert isinstance(updated, ChangeEvent)
    assert isinstance(updated.after, Allocation)
    assert updated.after.window.upper is None  # unbounded upper end
    assert isinstance(deleted, ChangeEvent)
    assert deleted.op is Op.DELETE
    assert updated.before is None, "default replica identity: no before-image on update"
    assert deleted.before is None, "default replica identity: the key only on delete"
    assert deleted.before_key == {"id": str(updated.after.id)}
    assert not deleted.before_available
    assert isinstance(tombstone, Tombstone)


def test_a_full_before_image_is_still_a_row() -> None:
    """The same delete as under REPLICA IDENTITY FULL (the whole old row): decoded as the row, not key-only."""
    messages = load(FIXTURES / "schemas_off/allocations_lifecycle.json")
    updated_doc = json.loads(messages[1].value or b"")
    deleted = messages[2]
    full = with_value(deleted, lambda doc: doc.__setitem__("before", updated_doc["after"]))
    record = full.decode()
    assert isinstance(record, ChangeEvent)
    assert isinstance(record.before, Allocation)
    assert record.before_key is None
    assert record.before_available


def test_a_key_only_before_image_is_recognised_whatever_the_column_defaults() -> None:
    """Debezium fills a key-only image's NOT NULL columns with schema defaults (a column DEFAULT such as
    severity 'info' included); one uuid, range or instant column holding "" or the epoch gives it away."""
    deleted = load(FIXTURES / "schemas_off/observability_events_lifecycle.json")[2]
    record = deleted.decode()
    assert isinstance(record, ChangeEvent)
    assert record.op is Op.DELETE
    assert record.before is None
    assert record.before_key is not None
    raw = json.loads(deleted.value or b"")["before"]
    assert raw["severity"] == "info", "the column default, not a type default"
    assert raw["created_at"].startswith("1970-01-01T00:00:00")


def test_schemas_enabled_envelope_is_unwrapped() -> None:
    messages = load(FIXTURES / "schemas_on/schemas_on_snapshot_update_truncate.json")
    raw = json.loads(messages[0].value or b"")
    assert set(raw) == {"schema", "payload"}, "the fixture really carries the schema wrapper"
    snapshot, default, full, *observability = (m.decode() for m in messages)
    by_op = {r.op: r for r in observability if isinstance(r, ChangeEvent)}
    truncate, insert = by_op[Op.TRUNCATE], by_op[Op.CREATE]
    assert isinstance(snapshot, ChangeEvent)
    assert snapshot.op is Op.READ
    assert snapshot.source.is_snapshot
    assert isinstance(snapshot.after, Booking)
    assert snapshot.after.status is BookingStatus.PENDING
    assert isinstance(full, ChangeEvent)
    assert isinstance(full.after, Booking)
    assert isinstance(full.before, Booking), "REPLICA IDENTITY FULL set by the owner: the whole old row"
    assert full.after.details == snapshot.after.details
    assert isinstance(default, ChangeEvent)
    assert isinstance(default.after, Booking)
    assert default.before is None
    assert default.after.details is UNAVAILABLE
    assert isinstance(truncate, ChangeEvent)
    assert truncate.op is Op.TRUNCATE
    assert truncate.row is None
    assert isinstance(insert, ChangeEvent)
    assert isinstance(insert.after, ObservabilityEvent)


# ---- bad input -----------------------------------------------------------------------------------


def allocation_message() -> RawMessage:
    return load(FIXTURES / "schemas_off/allocations_lifecycle.json")[0]


def with_value(message: RawMessage, edit: Any) -> RawMessage:
    doc = json.loads(message.value or b"")
    edit(doc)
    return RawMessage(message.topic, message.partition, message.offset, message.key, json.dumps(doc).encode())


def _set(path: str, value: object) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for part in parents:
            doc = doc[part]
        doc[leaf] = value

    return edit


def _drop(path: str) -> Any:
    def edit(doc: dict[str, Any]) -> None:
        *parents, leaf = path.split(".")
        for part in parents:
            doc = doc[part]
        del doc[leaf]

    return edit


@pytest.mark.parametrize(
    ("edit", "field", "reason"),
    [
        (_drop("after.window"), "after.window", "Field required"),
        (_set("after.window", "[garbage)"), "after.window", "no ','"),
        (_set("after.window", 17), "after.window", "expected a range string"),
        (_set("after.resource_type", "chair"), "after.resource_type", "'table', 'hold' or 'merge_group'"),
        (_set("after.id", "not-a-uuid"), "after.id", "UUID"),
        (_set("after.created_at", "yesterday"), "after.created_at", "not an ISO-8601 timestamp"),
        (_set("op", "x"), "op", "Input should be"),
        (_drop("source"), "source", "Field required"),
        (_set("source.sequence", "[not json"), "source.sequence", "not a JSON array"),
    ],
)
def test_schema_violations_name_topic_offset_and_field(edit: Any, field: str, reason: str) -> None:
    bad = with_value(allocation_message(), edit)
    with pytest.raises(CdcDecodeError) as caught:
        bad.decode()
    error = caught.value
    assert error.topic == bad.topic
    assert error.partition == bad.partition
    assert error.offset == bad.offset
    assert error.field == field
    assert reason in error.reason
    assert error.retryable is False
    assert f"{bad.topic}[{bad.partition}]@{bad.offset}" in str(error)
    headers = dict(error.as_headers())
    assert headers["allocguard.error.field"] == field.encode()
    assert headers["allocguard.source.offset"] == str(bad.offset).encode()


@pytest.mark.parametrize(
    ("topic", "key", "value", "field", "reason"),
    [
        ("platform.public.allocations", b'{"id":"x"}', b"{not json", "value", "not JSON"),
        ("platform.public.allocations", b'{"id":"x"}', b"\xff\xfe", "value", "not JSON"),
        ("platform.public.allocations", b'{"id":"x"}', b"[1, 2]", "value", "expected a JSON object envelope"),
        ("platform.public.allocations", b"[1]", None, "key", "expected a JSON object"),
        ("platform.public.allocations", b"nope", None, "key", "not JSON"),
        ("platform.public.menus", b'{"id":"x"}', b"{}", "topic", "no row model for table 'public.menus'"),
    ],
)
def test_malformed_messages(topic: str, key: bytes, value: bytes | None, field: str, reason: str) -> None:
    with pytest.raises(CdcDecodeError) as caught:
        decode_message(topic, 2, 99, key, value)
    assert caught.value.field == field
    assert reason in caught.value.reason
    assert caught.value.offset == 99


def test_several_errors_are_counted_in_the_reason() -> None:
    def edit(doc: dict[str, Any]) -> None:
        del doc["after"]["window"]
        doc["after"]["shadow"] = "perhaps"

    with pytest.raises(CdcDecodeError, match="1 more error"):
        with_value(allocation_message(), edit).decode()


def test_unknown_extra_columns_are_ignored() -> None:
    """A live platform with more columns than the model must still decode."""
    record = with_value(allocation_message(), _set("after.new_column", {"x": 1})).decode()
    assert isinstance(record, ChangeEvent)
    assert isinstance(record.after, Allocation)
    assert isinstance(record.after.window, TstzRange)
