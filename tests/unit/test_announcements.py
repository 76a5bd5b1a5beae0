"""The fast reader of hold announcements (handlers/announcements.py) never decides differently from the models:
for generated messages — the plain shape, then each part of it bent (a field missing, another type, an odd uuid
or instant, a duplicate key, another op, a schema wrapper, extra keys) — either it steps aside (None: the full
path decides) or it answers exactly what the full path answers: a hold signal with the same op, key and note."""

from __future__ import annotations

import json
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.runtime.routing import HOLD, Signal, route, route_decoded
from handlers.announcements import read_hold
from handlers.detect import DetectionRules, HoldNote
from tests.support.clock import hold_window, iso_from_now

RULES = DetectionRules()
TOPIC = "platform.public.observability_events"
START, END = hold_window()  # a hold valid when the test runs

ODD_VALUES: list[Any] = [
    None,
    "",
    " ",
    0,
    1,
    -1,
    1.0,
    True,
    False,
    [],
    {},
    [None],
    "x",
    "__debezium_unavailable_value",
    "1970-01-01T00:00:00Z",
    "0001-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59",
    "2026-13-01T00:00:00Z",  # date-lint: recorded
    " 2030-01-01T00:00:00Z ",  # date-lint: recorded
    "2030-01-01T00:00:00+05:30",  # date-lint: recorded
    "infinity",
    "2030-01-01 00:00:00 BC",  # date-lint: recorded
    "ABCDEF01-2345-6789-ABCD-EF0123456789",
    "abcdef0123456789abcdef0123456789",
    "{abcdef01-2345-6789-abcd-ef0123456789}",
    "urn:uuid:abcdef01-2345-6789-abcd-ef0123456789",
    "abcdef01-2345-6789-abcd-ef0123456789",
    "capacity.hold",
    "capacity.hold.created",
    "public",
    "allocations",
    "booking_table_assignments",
    "bookings",
    "c",
    "r",
    "u",
    '[null,"1"]',
    "[1,2]",
    '{"a":1}',
    "true",
    2**63,
    2**70,
]
ODD = st.sampled_from(ODD_VALUES)


def base() -> dict[str, Any]:
    context: dict[str, Any] = {
        "holdId": str(uuid.uuid4()),
        "tableIds": [str(uuid.uuid4()), str(uuid.uuid4())],
        "startAt": START,
        "endAt": END,
        "expiresAt": END,
        "metadata": {"requireAdjacency": True},
    }
    return {
        "before": None,
        "after": {
            "id": str(uuid.uuid4()),
            "created_at": iso_from_now(),
            "source": "capacity.hold",
            "event_type": "capacity.hold.created",
            "severity": "info",
            "context": context,
            "restaurant_id": str(uuid.uuid4()),
            "booking_id": str(uuid.uuid4()),
        },
        "source": {
            "version": "3.6.1.Final",
            "connector": "postgresql",
            "name": "platform",
            "ts_ms": 1,
            "snapshot": "false",
            "db": "platform",
            "sequence": '["1","2"]',
            "ts_us": 1000,
            "schema": "public",
            "table": "observability_events",
            "txId": 7,
            "lsn": 9,
            "xmin": None,
        },
        "transaction": None,
        "op": "c",
        "ts_ms": 2,
    }


#: where a mutation lands — the envelope, its source block, the row, the row's context (and its metadata) — and
#: the fields there worth bending (the models' own, the aliases they accept, one they ignore)
FIELDS = {
    "envelope": ["before", "after", "source", "op", "ts_ms", "ts_us", "transaction", "before_key", "extra"],
    "source": [
        "version",
        "connector",
        "name",
        "ts_ms",
        "db",
        "schema",
        "schema_name",
        "table",
        "snapshot",
        "sequence",
        "txId",
        "tx_id",
        "lsn",
        "xmin",
        "extra",
    ],
    "after": [
        "id",
        "created_at",
        "source",
        "event_type",
        "severity",
        "context",
        "restaurant_id",
        "booking_id",
        "extra",
    ],
    "context": ["holdId", "tableIds", "startAt", "endAt", "expiresAt", "metadata", "bookingId", "restaurantId"],
    "metadata": ["requireAdjacency"],
}
MUTATION = st.sampled_from(sorted(FIELDS)).flatmap(
    lambda place: st.tuples(st.sampled_from(["set", "drop"]), st.just(place), st.sampled_from(FIELDS[place]), ODD)
)


def mutate(doc: dict[str, Any], mutation: tuple[str, str, str, Any]) -> None:
    how, place, name, value = mutation
    target: Any = {
        "envelope": doc,
        "source": doc.get("source"),
        "after": doc.get("after"),
        "context": (doc.get("after") or {}).get("context") if isinstance(doc.get("after"), dict) else None,
        "metadata": None,
    }[place]
    if place == "metadata" and isinstance(doc.get("after"), dict):
        context = doc["after"].get("context")
        target = context.get("metadata") if isinstance(context, dict) else None
    if not isinstance(target, dict):
        return
    if how == "drop":
        target.pop(name, None)
    else:
        target[name] = value


def encode(doc: dict[str, Any], context_as_text: bool, spacing: bool) -> bytes:
    after = doc.get("after")
    if context_as_text and isinstance(after, dict) and isinstance(after.get("context"), dict | list):
        after["context"] = json.dumps(after["context"])
    separators = (", ", ": ") if spacing else (",", ":")
    return json.dumps(doc, separators=separators).encode()


KEYS = st.one_of(
    st.none(),
    st.just(b'{"id":"x"}'),
    st.just(b'{"schema":{},"payload":{"id":"x"}}'),
    st.just(b'{"schema":{},"payload":[1]}'),
    st.just(b"[1]"),
    st.just(b"not json"),
)


def agree(key: bytes | None, value: bytes) -> HoldNote | None:
    """The fast reader's answer, checked against the full path's; the note when the reader answered."""
    read = read_hold(key, value, RULES)
    full = route_decoded(TOPIC, 0, 0, key, value, RULES)
    if read is None:
        return None
    op, note = read
    assert isinstance(full, Signal), f"the reader found a hold where the full path says {full!r}"
    assert full.kind == HOLD
    assert full.op == op
    assert full.key == note.booking_id
    assert full.found == note, "the reader's note differs from the classified hold's"
    # and route (which tries the reader first) answers the same
    assert route(TOPIC, 0, 0, key, value, RULES) == Signal(op, None, full.key, HOLD, note)
    return note


def test_the_plain_shape_is_read_by_the_fast_reader() -> None:
    doc = base()
    assert agree(b'{"id":"x"}', encode(doc, True, False)) is not None
    assert agree(None, encode(base(), True, False)) is not None


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    mutations=st.lists(MUTATION, max_size=3),
    key=KEYS,
    context_as_text=st.booleans(),
    spacing=st.booleans(),
)
@example(mutations=[], key=None, context_as_text=True, spacing=False)
def test_the_fast_reader_agrees_with_the_models(
    mutations: list[tuple[str, str, str, Any]], key: bytes | None, context_as_text: bool, spacing: bool
) -> None:
    doc = base()
    for mutation in mutations:
        mutate(doc, mutation)
    agree(key, encode(doc, context_as_text, spacing))


@settings(max_examples=200, deadline=None)
@given(at=st.integers(min_value=0, max_value=2000), junk=st.binary(min_size=1, max_size=12))
def test_bytes_spliced_into_an_announcement(at: int, junk: bytes) -> None:
    value = encode(base(), True, False)
    at %= len(value)
    agree(None, value[:at] + junk + value[at:])


def test_a_duplicate_event_type_is_left_to_the_full_path() -> None:
    value = encode(base(), True, False)
    doubled = value.replace(b'"severity"', b'"event_type":"capacity.hold.other","severity"', 1)
    assert read_hold(None, doubled, RULES) is None
    assert not isinstance(route(TOPIC, 0, 0, None, doubled, RULES), Signal)


def test_a_later_duplicate_before_is_left_to_the_full_path() -> None:
    value = encode(base(), True, False)
    doubled = value[:-1] + b',"before":{"id":"' + str(uuid.uuid4()).encode() + b'"}}'
    assert read_hold(None, doubled, RULES) is None
    agree(None, doubled)


def test_how_many_the_reader_answers() -> None:
    """Not vacuous: of the plain shape with one harmless change (a key its context adds, another severity, an
    expiry left out, a snapshot read), the reader answers every one."""
    harmless: list[tuple[str, str, str, Any]] = [
        ("set", "context", "extra", {}),
        ("drop", "context", "expiresAt", None),
        ("drop", "context", "metadata", None),
        ("set", "after", "severity", "warning"),
        ("drop", "envelope", "transaction", None),
        ("drop", "source", "sequence", None),
        ("set", "source", "origin", None),
        ("set", "envelope", "op", "r"),
    ]
    for mutation in harmless:
        doc = base()
        mutate(doc, mutation)
        assert agree(None, encode(doc, True, False)) is not None, mutation


def test_a_field_debezium_does_not_write_makes_it_step_aside() -> None:
    """A column the table gained, a key the envelope gained: the reader does not know what the models would make
    of it (nor whether a JSON parser accepts what it would skip), so the full path decides."""
    for place in ("envelope", "source", "after"):
        doc = base()
        mutate(doc, ("set", place, "extra", 1))
        value = encode(doc, True, False)
        assert read_hold(None, value, RULES) is None, place
        assert isinstance(route(TOPIC, 0, 0, None, value, RULES), Signal), "the full path still finds the hold"


def test_a_number_no_double_holds_is_left_to_the_models() -> None:
    """msgspec would skip ``1e400`` in a field it ignores; orjson (the models' parser) rejects it: dead letter."""
    for where in (b'"ts_ms":2', b'\\"endAt\\"'):
        value = encode(base(), True, False)
        assert where in value
        bent = value.replace(where, b'"huge":1e400,' + where, 1)
        assert read_hold(None, bent, RULES) is None
        assert not isinstance(route(TOPIC, 0, 0, None, bent, RULES), Signal)


def test_every_single_bend() -> None:
    """Every field of every part, dropped or set to every odd value, one at a time (≈ 4,000 messages): the
    reader steps aside or agrees — and it still answers for the harmless ones (the count guards that)."""
    answered = 0
    for place, names in FIELDS.items():
        for name in names:
            for how, values in (("drop", [None]), ("set", ODD_VALUES)):
                for odd in values:
                    doc = base()
                    mutate(doc, (how, place, name, odd))
                    answered += agree(None, encode(doc, True, False)) is not None
    assert answered > 100
