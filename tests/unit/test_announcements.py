"""The fast reader of hold announcements (handlers/announcements.py) never decides differently from the models:
for generated messages — the plain shape, then each part of it bent (a field missing, another type, an odd uuid
or instant, a duplicate key, another op, a schema wrapper, extra keys) — either it steps aside (None: the full
path decides) or it answers exactly what the full path answers: a hold signal with the same op, key and note."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.runtime.routing import HOLD, Signal, route, route_decoded
from consumer.version import hold_scanner_is_native
from handlers.announcements import read_hold, read_hold_decoded, scan_hold
from handlers.detect import DetectionRules, HoldNote, HoldRule
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


def mutations_of(fields: dict[str, list[str]]) -> st.SearchStrategy[tuple[str, str, str, Any]]:
    """One bend: set a field of one place to an odd value, or drop it (for :func:`mutate`)."""
    return st.sampled_from(sorted(fields)).flatmap(
        lambda place: st.tuples(st.sampled_from(["set", "drop"]), st.just(place), st.sampled_from(fields[place]), ODD)
    )


MUTATION = mutations_of(FIELDS)


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
    else:  # a copy: the odd values are shared by every example, and a later mutation may write into this one
        target[name] = copy.deepcopy(value)


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


def agree(key: bytes | None, value: bytes, rules: DetectionRules = RULES) -> HoldNote | None:
    """The fast reader's answer, checked against the full path's; the note when the reader answered. Its two
    parts are checked apart too: where the C scanner answers, the msgspec reader answers the same."""
    scanned = scan_hold(key, value, rules)
    decoded = read_hold_decoded(key, value, rules)
    if scanned is not None:
        assert scanned == decoded, f"the C scanner answers {scanned!r} where the msgspec reader says {decoded!r}"
    read = read_hold(key, value, rules)
    assert read == (scanned if scanned is not None else decoded)
    full = route_decoded(TOPIC, 0, 0, key, value, rules)
    if read is None:
        return None
    op, note = read
    assert isinstance(full, Signal), f"the reader found a hold where the full path says {full!r}"
    assert full.kind == HOLD
    assert full.op == op
    assert full.key == note.booking_id
    assert full.found == note, "the reader's note differs from the classified hold's"
    # and route (which tries the reader first) answers the same
    assert route(TOPIC, 0, 0, key, value, rules) == Signal(op, None, full.key, HOLD, note)
    return note


def test_the_plain_shape_is_read_by_the_fast_reader() -> None:
    doc = base()
    assert agree(b'{"id":"x"}', encode(doc, True, False)) is not None
    assert agree(None, encode(base(), True, False)) is not None


def test_the_plain_shape_is_read_by_the_c_scanner() -> None:
    """Built here (as in CI and the image), and it answers for what Debezium and jsonb write."""
    assert hold_scanner_is_native(), "handlers/_holdscan.c is not compiled"
    for key in (None, b'{"booking_id":"x"}', b'{"id":1,"n":null,"b":true}', b"{}"):
        value = encode(base(), True, False)
        assert scan_hold(key, value, RULES) is not None, key
        assert agree(key, value) is not None


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


#: the context's values as jsonb prints them: whatever the platform adds to a hold's context next to what it reads
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    extra=st.dictionaries(st.text(max_size=10), JSON_VALUES, max_size=4),
    metadata=JSON_VALUES,
    hold_id=st.one_of(st.just("ok"), JSON_VALUES),
    tables=st.one_of(st.just("ok"), st.lists(st.just("ok"), min_size=1, max_size=70), JSON_VALUES),
    ascii_only=st.booleans(),
)
def test_the_c_scanner_reads_any_context_as_the_models_do(
    extra: dict[str, Any], metadata: Any, hold_id: Any, tables: Any, ascii_only: bool
) -> None:
    """Generated contexts (any JSON next to the hold's keys, the keys themselves of any type, up to 70 tables,
    texts with escapes and beyond ASCII as jsonb prints them): the scanner steps aside or agrees."""
    doc = base()
    context = doc["after"]["context"]
    context.update(extra)
    context["metadata"] = metadata
    if hold_id != "ok":
        context["holdId"] = hold_id
    if tables == "ok":
        pass
    elif isinstance(tables, list) and all(t == "ok" for t in tables):
        context["tableIds"] = [str(uuid.uuid4()) for _ in tables]
    else:
        context["tableIds"] = tables
    doc["after"]["context"] = json.dumps(context, ensure_ascii=ascii_only)
    agree(None, json.dumps(doc, separators=(",", ":"), ensure_ascii=ascii_only).encode())


def test_what_the_c_scanner_leaves_to_the_msgspec_reader() -> None:
    """Legal but not the plainest: the scanner steps aside, the msgspec reader still answers (the same note as
    the full path's); and what neither may answer."""
    plain = encode(base(), True, False)
    legal = {
        "an escape in a context text": plain.replace(b'\\"startAt\\"', b'\\"x\\": \\"a\\\\\\"b\\", \\"startAt\\"', 1),
        "a context key twice (orjson keeps the last)": plain.replace(
            b'\\"startAt\\"', b'\\"holdId\\": \\"' + str(uuid.uuid4()).encode() + b'\\", \\"startAt\\"', 1
        ),
        "the adjacency flag twice": plain.replace(
            b'\\"requireAdjacency\\": true', b'\\"requireAdjacency\\": false, \\"requireAdjacency\\": true', 1
        ),
        "a sequence with spaces": plain.replace(b'"[\\"1\\",\\"2\\"]"', b'"[\\"1\\", \\"2\\"]"', 1),
        "whitespace after the envelope": plain + b" ",
        "a context nested 20 deep": plain.replace(
            b'\\"startAt\\"', b'\\"n\\": ' + b"[" * 20 + b"]" * 20 + b', \\"startAt\\"', 1
        ),
        "a 19-digit lsn past 64 bits' half": plain.replace(b'"lsn":9', b'"lsn":9223372036854775807', 1),
    }
    for name, value in legal.items():
        assert value != plain, name
        assert scan_hold(None, value, RULES) is None or name.startswith("a 19-digit"), name
        assert agree(None, value) is not None, name
    refused = {
        "an lsn past 64 bits": plain.replace(b'"lsn":9', b'"lsn":9223372036854775808', 1),
        "a huge number in the context": plain.replace(b'\\"startAt\\"', b'\\"n\\": 1e400, \\"startAt\\"', 1),
        "a context cut short": plain.replace(b'}}","restaurant_id"', b'}","restaurant_id"', 1),
        "a context nested deeper than JSON parsers go": plain.replace(
            b'\\"startAt\\"', b'\\"n\\": ' + b"[" * 1100 + b"]" * 1100 + b', \\"startAt\\"', 1
        ),
    }
    for name, value in refused.items():
        assert value != plain, name
        assert scan_hold(None, value, RULES) is None, name
        agree(None, value)
    twice = {  # a field met twice: the scanner never guesses which one a parser keeps
        "a row field": plain.replace(b'"severity":"info"', b'"severity":"info","severity":"info"', 1),
        "a source field": plain.replace(b'"db":"platform"', b'"db":"platform","db":"other"', 1),
        "an envelope field": plain.replace(b'"op":"c"', b'"op":"c","op":"c"', 1),
    }
    for name, value in twice.items():
        assert value != plain, name
        assert scan_hold(None, value, RULES) is None, name
        agree(None, value)


def test_the_c_scanner_follows_the_rules() -> None:
    """Other keys and adjacency paths (one part, three parts, a part met twice on the way): as the models."""
    doc = base()
    context = doc["after"]["context"]
    context["flags"] = {"deep": {"adjacent": False}, "requireAdjacency": True}
    context["hold"] = context.pop("holdId")
    value = encode(doc, True, False)
    for rule in (
        HoldRule(hold_id_key="hold", require_adjacency_path="flags.deep.adjacent"),
        HoldRule(hold_id_key="hold", require_adjacency_path="flags.requireAdjacency"),
        HoldRule(hold_id_key="hold", require_adjacency_path="flags"),
        HoldRule(hold_id_key="hold", require_adjacency_path="flags.deep.adjacent.more"),
        HoldRule(hold_id_key="hold", require_adjacency_path="a.b.c.d.e.f.g.h.i"),
        HoldRule(hold_id_key="hold", start_key="hold"),
    ):
        rules = DetectionRules(hold=rule)
        note = agree(None, value, rules)
        if rule.start_key == "hold":
            assert note is None
            continue
        assert note is not None, rule
        assert (scan_hold(None, value, rules) is not None) == (len(rule.require_adjacency_path.split(".")) <= 8)


@settings(max_examples=600, deadline=None)
@given(at=st.integers(min_value=0, max_value=2000), junk=st.binary(min_size=1, max_size=12), width=st.integers(0, 3))
def test_bytes_spliced_into_a_context(at: int, junk: bytes, width: int) -> None:
    """Junk in the one part the scanner unescapes and parses itself, replacing or adding bytes."""
    value = encode(base(), True, False)
    begin = value.index(b'"context":"') + len(b'"context":"')
    end = value.index(b'","restaurant_id"')
    at = begin + at % (end - begin)
    agree(None, value[:at] + junk + value[at + width :])
