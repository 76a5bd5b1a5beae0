"""No single message can stop the consumer: whatever it holds, `route` (the per-message decision of `allocguard
run`) ends in skip, signal or dead letter — never an exception — and the span and DLQ headers built around it
never raise either. Hypothesis drives hostile messages through exactly that code."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumer.runtime.routing import DeadLetter, Relevance, Signal, Skip, first_event_type, route
from consumer.telemetry import Telemetry
from handlers.detect import DetectionRules
from schemas.rows import CAPTURED
from tests.support.clock import hold_window, iso_from_now

RULES = DetectionRules()
TOPICS = [f"platform.{t}" for t in CAPTURED] + ["__debezium-heartbeat.platform", "platform.public.unknown", ""]
OBS = "platform.public.observability_events"

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999Z",
            "1970-01-01T00:00:00Z",
            "\ud7ff",
            "allocations_no_overlap",
            '["9999-12-31 20:00:00+00","9999-12-31 22:00:00+00")',
        ]
    ),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

SOURCE_BLOCK = {
    "version": "3.6.1.Final",
    "connector": "postgresql",
    "name": "platform",
    "ts_ms": 1,
    "db": "p",
    "schema": "public",
    "table": "observability_events",
}
START, END = hold_window()  # a hold valid when the test runs
UUIDS = st.uuids().map(str)
DATES = st.sampled_from(
    [iso_from_now(), "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "not a date", "", "1970-01-01T00:00:00Z"]
)


@st.composite
def hold_or_failure(draw: Any) -> dict[str, Any]:
    """An observability_events row the rules look at, with hostile values where the rules read."""
    if draw(st.booleans()):
        source, kind = "capacity.hold", "capacity.hold.created"
        context: Any = {
            "holdId": draw(st.one_of(UUIDS, json_leaf)),
            "tableIds": draw(st.one_of(st.lists(UUIDS, max_size=3), json_value)),
            "startAt": draw(DATES),
            "endAt": draw(DATES),
            "expiresAt": draw(DATES),
            "metadata": {"requireAdjacency": draw(json_leaf)},
        }
    else:
        source, kind = draw(
            st.sampled_from(
                [("capacity.atomic_confirm", "transaction.failed"), ("auto_assign", "auto_assign.attempt_error")]
            )
        )
        context = {"error": draw(st.sampled_from(["allocations_no_overlap", "x"])), "holdId": draw(json_leaf)}
    if draw(st.booleans()):
        context = draw(json_value)
    depth = draw(st.sampled_from([0, 0, 0, 5000, 100_000]))
    text = json.dumps(context)
    if depth:
        text = "[" * depth + text + "]" * depth
    return {
        "id": draw(st.one_of(UUIDS, json_leaf)),
        "created_at": draw(DATES),
        "source": source,
        "event_type": kind,
        "severity": draw(st.sampled_from(["info", "error", "notice", ""])),
        "context": text,
        "booking_id": draw(st.one_of(UUIDS, st.none(), json_leaf)),
        "restaurant_id": draw(st.one_of(UUIDS, st.none())),
    }


@st.composite
def envelope(draw: Any) -> bytes:
    after = draw(st.one_of(hold_or_failure(), json_value))
    doc: Any = {
        "before": draw(st.one_of(st.none(), json_value)),
        "after": after,
        "source": dict(SOURCE_BLOCK),
        "op": draw(st.sampled_from(["c", "r", "u", "d", "t", "m", "z", ""])),
    }
    if draw(st.booleans()):
        doc = {"schema": draw(json_value), "payload": doc}
    raw = json.dumps(doc, allow_nan=True).encode()
    mangle = draw(st.sampled_from(["none", "none", "truncate", "bytes", "nest"]))
    if mangle == "truncate":
        raw = raw[: draw(st.integers(0, len(raw)))]
    elif mangle == "bytes":
        raw = raw.replace(b"a", b"\xff\xfe", 1)
    elif mangle == "nest":
        raw = b'{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return raw


values = st.one_of(st.none(), st.binary(max_size=200), envelope())
keys = st.one_of(st.none(), st.binary(max_size=40), UUIDS.map(lambda u: json.dumps({"booking_id": u}).encode()))
headers = st.lists(
    st.tuples(st.text(max_size=12), st.one_of(st.binary(max_size=60), st.none(), st.text(max_size=20))), max_size=4
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(topic=st.sampled_from([OBS, OBS, OBS, *TOPICS]), key=keys, value=values, hdrs=headers)
def test_no_message_escapes_routing(topic: str, key: bytes | None, value: bytes | None, hdrs: list[Any]) -> None:
    routed = route(topic, 0, 42, key, value, RULES)
    assert isinstance(routed, Skip | Signal | DeadLetter)
    if isinstance(routed, DeadLetter):
        names = [name for name, _ in routed.error.as_headers()]
        assert "allocguard.error.reason" in names
        assert all(isinstance(v, bytes) for _, v in routed.error.as_headers())
    if isinstance(routed, Signal):
        assert routed.key
    span = TELEMETRY.consumer_span(topic, 0, 42, key, [("traceparent", b"\xff\xfe00-bad"), *hdrs], "g")
    TELEMETRY.end(span)


TELEMETRY = Telemetry()


def test_named_poison_cases() -> None:
    """The cases that stopped allocguard before, each ending as a dead letter or a handled signal."""
    deep = b"[" * 100_000 + b"]" * 100_000
    assert isinstance(route(OBS, 0, 1, None, deep, RULES), DeadLetter)
    hold = {
        "id": "6f1c4a4e-1111-4111-8111-111111111111",
        "created_at": iso_from_now(),
        "source": "capacity.hold",
        "event_type": "capacity.hold.created",
        "severity": "info",
        "booking_id": "6f1c4a4e-1111-4111-8111-111111111114",
        "context": json.dumps(
            {
                "holdId": "6f1c4a4e-1111-4111-8111-111111111112",
                "tableIds": ["6f1c4a4e-1111-4111-8111-111111111113"],
                "startAt": "9999-12-31T20:00:00Z",
                "endAt": "9999-12-31T22:00:00Z",
                "expiresAt": "9999-12-31T23:59:00Z",
            }
        ),
    }
    source = {
        "version": "3",
        "connector": "postgresql",
        "name": "p",
        "ts_ms": 1,
        "db": "x",
        "schema": "public",
        "table": "observability_events",
    }
    year_9999 = json.dumps({"before": None, "after": hold, "source": source, "op": "c"}).encode()
    routed = route(OBS, 0, 1, None, year_9999, RULES)
    assert isinstance(routed, Signal), "a hold announced for year 9999 is kept (saturating), not a crash"
    nested_context = {**hold, "context": '{"a":' + "[" * 100_000 + "]" * 100_000 + "}"}
    nested = json.dumps({"before": None, "after": nested_context, "source": source, "op": "c"}).encode()
    assert isinstance(route(OBS, 0, 1, None, nested, RULES), DeadLetter)
    big = b"x" * 1_000_000
    assert isinstance(route(OBS, 0, 1, None, big, RULES), DeadLetter)
    span = TELEMETRY.consumer_span(OBS, 0, 1, b"\xff", [("traceparent", b"\xff" * 55)], "g")
    TELEMETRY.end(span)


# ---- the byte test never misses ------------------------------------------------------------------------

RELEVANCE = Relevance(RULES)
RULE_KINDS = [(RULES.hold.source, RULES.hold.event_type)] + [(r.source, r.event_type) for r in RULES.failures]


def escape_some(text: str, draw: Any) -> str:
    """JSON text with some of its letters written as \\uXXXX escapes (still the same JSON)."""
    out = []
    for char in text:
        if char.isalpha() and draw(st.integers(0, 9)) == 0:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(char)
    return "".join(out)


@st.composite
def signal_like(draw: Any) -> bytes:
    source, kind = draw(st.sampled_from([*RULE_KINDS, ("auto_assign", "auto_assign.quote"), ("x", "y")]))
    marker = draw(st.sampled_from(["allocations_no_overlap", "allocations_no_overlap (detail)", "other", ""]))
    context = {
        "holdId": str(draw(st.uuids())),
        "tableIds": [str(draw(st.uuids()))],
        "startAt": START,
        "endAt": END,
        draw(st.sampled_from(["error", "planner_error", "note"])): marker,
    }
    after = {
        "id": str(draw(st.uuids())),
        "created_at": iso_from_now(),
        "source": source,
        "event_type": kind,
        "severity": "error",
        "context": json.dumps(context, ensure_ascii=draw(st.booleans())),
        "booking_id": str(draw(st.uuids())),
    }
    doc: Any = {"before": None, "after": after, "source": dict(SOURCE_BLOCK), "op": draw(st.sampled_from("cr"))}
    if draw(st.booleans()):
        doc = {"schema": {"type": "struct"}, "payload": doc}
    compact = draw(st.booleans())  # Debezium's JsonConverter writes compact JSON: the byte test's fast path
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()), separators=(",", ":") if compact else None)
    decoy = draw(st.sampled_from(["", *(f"{k}," for k in DECOYS)]))
    if decoy:  # a duplicate event_type key (plain, escaped, nested) before or after the real one
        if draw(st.booleans()):
            text = text.replace('"after":{', '"after":{' + decoy, 1)
        else:
            text = text.replace('"booking_id"', decoy + '"booking_id"', 1)
    if draw(st.booleans()):
        text = escape_some(text, draw)
    return text.encode()


DECOYS = [
    '"event_type":"decoy"',
    '"event_type":"transaction.failed"',
    '"event\\u005ftype":"transaction.failed"',
    '"event\\u005ftype":"decoy"',
    '"x":{"event_type":"decoy"}',
    '"x":{"event_type":"capacity.hold.created"}',
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(value=st.one_of(signal_like(), envelope(), st.binary(max_size=100)))
def test_the_byte_test_never_misses_a_signal(value: bytes) -> None:
    """prefilter says no ⇒ classify finds nothing: every signal the full path would see passes the byte test."""
    routed = route(OBS, 0, 1, None, value, RULES)
    if not RELEVANCE(OBS, value):
        assert not isinstance(routed, Signal), value[:300]


def test_the_byte_test_lets_real_signals_through_and_skips_the_rest() -> None:
    hold = json.dumps(
        {
            "before": None,
            "source": SOURCE_BLOCK,
            "op": "c",
            "after": {
                "id": str(uuid.uuid4()),
                "created_at": iso_from_now(),
                "source": "capacity.hold",
                "event_type": "capacity.hold.created",
                "severity": "info",
                "booking_id": str(uuid.uuid4()),
                "context": json.dumps(
                    {
                        "holdId": str(uuid.uuid4()),
                        "tableIds": [str(uuid.uuid4())],
                        "startAt": START,
                        "endAt": END,
                    }
                ),
            },
        }
    ).encode()
    assert RELEVANCE(OBS, hold)
    assert isinstance(route(OBS, 0, 1, None, hold, RULES), Signal)
    quiet = hold.replace(b"capacity.hold.created", b"capacity.hold.expired")
    assert not RELEVANCE(OBS, quiet)
    assert not RELEVANCE("platform.public.allocations", hold), "only observability_events carry signals"
    assert not RELEVANCE(OBS, None), "a tombstone"


@given(
    key=st.one_of(st.none(), st.binary(max_size=50)),
    value=st.one_of(st.none(), st.binary(max_size=200), st.text(max_size=50).map(str.encode)),
)
def test_a_captured_message_round_trips(key: bytes | None, value: bytes | None) -> None:
    """capture → replay --from-file keeps every value byte for byte (UTF-8 text, else base64)."""
    from consumer.operations.replay import Raw

    raw = Raw("t", 1, 2, 3, key, value)
    assert Raw.from_json(json.loads(json.dumps(raw.to_json()))) == raw


def test_the_fast_path_reads_the_event_type_and_a_duplicate_key_cannot_slip_past_it() -> None:
    after = {
        "id": "6f1c4a4e-1111-4111-8111-111111111111",
        "created_at": iso_from_now(),
        "source": "capacity.atomic_confirm",
        "event_type": "transaction.failed",
        "severity": "error",
        "context": json.dumps({"error": "allocations_no_overlap", "holdId": "6f1c4a4e-1111-4111-8111-111111111112"}),
        "booking_id": "6f1c4a4e-1111-4111-8111-111111111114",
    }
    doc = {"before": None, "after": after, "source": dict(SOURCE_BLOCK), "op": "c"}
    signal = json.dumps(doc, separators=(",", ":"))
    assert first_event_type(signal.encode()) == b"transaction.failed"
    assert RELEVANCE(OBS, signal.encode())
    assert isinstance(route(OBS, 0, 1, None, signal.encode(), RULES), Signal)
    other = signal.replace('"event_type":"transaction.failed"', '"event_type":"auto_assign.attempt.3"')
    assert not RELEVANCE(OBS, other.encode()), "another event type is ruled out by reading it alone"
    for decoy in ('"event_type":"decoy",', '"event\\u005ftype":"decoy",', '"event\\u005ftype":"transaction.failed",'):
        for value in (
            signal.replace('"after":{', '"after":{' + decoy, 1).encode(),
            signal.replace('"booking_id"', decoy + '"booking_id"', 1).encode(),
            other.replace('"booking_id"', decoy + '"booking_id"', 1).encode(),
        ):
            # whatever the duplicate keys say, the byte test and the decoder never disagree about a signal
            assert RELEVANCE(OBS, value) or not isinstance(route(OBS, 0, 1, None, value, RULES), Signal), value
    plain_first = signal.replace('"after":{', '"after":{"event_type":"decoy",', 1).encode()
    assert not RELEVANCE(OBS, plain_first)
    assert isinstance(route(OBS, 0, 1, None, plain_first, RULES), DeadLetter)


class FakeMessage:
    """What the byte test reads of a confluent_kafka Message."""

    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None, error: object = None) -> None:
        self._t, self._p, self._o, self._v, self._e = topic, partition, offset, value, error

    def error(self) -> object:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def value(self) -> bytes | None:
        return self._v


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    values=st.lists(st.one_of(signal_like(), envelope(), st.binary(max_size=60), st.none()), max_size=12),
    topics=st.lists(st.sampled_from([OBS, "platform.public.allocations"]), min_size=12, max_size=12),
)
def test_the_batch_selection_is_the_per_message_byte_test(values: list[bytes | None], topics: list[str]) -> None:
    messages = [FakeMessage(topics[i], i % 3, i, v) for i, v in enumerate(values)]
    batch = RELEVANCE.select(messages)  # type: ignore[arg-type]
    expected = [m for m in messages if RELEVANCE(m.topic(), m.value())]
    assert [id(m) for m in batch.candidates] == [id(m) for m in expected]
    skipped = [m for m in messages if m not in expected]
    assert sum(batch.skipped.values()) == len(skipped)
    for topic in set(topics):
        assert batch.skipped.get(topic, 0) == len([m for m in skipped if m.topic() == topic])


WATCHING = Relevance(RULES, watch=True)


def test_the_c_byte_test_is_built() -> None:
    """CI runs the native byte test, not only its Python twin (setup.py marks it optional for machines without
    a compiler: there, ``allocguard run`` is correct but slower)."""
    import importlib

    assert importlib.import_module("consumer._bytetest").select is not None
    assert RELEVANCE.native


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(
    values=st.lists(
        st.one_of(signal_like(), envelope(), st.binary(max_size=60), st.none(), st.just(b"<error>")), max_size=14
    ),
    topics=st.lists(
        st.sampled_from([OBS, OBS, OBS, "platform.public.allocations", "platform.public.bookings", "other"]),
        min_size=14,
        max_size=14,
    ),
    watch=st.booleans(),
)
def test_the_c_byte_test_decides_as_its_python_twin(values: list[bytes | None], topics: list[str], watch: bool) -> None:
    """Same candidates (same objects, same order), same per-topic skip counts, same error messages."""
    relevance = WATCHING if watch else RELEVANCE
    messages = [
        FakeMessage(topics[i], 0, i, v, error="broker down" if v == b"<error>" else None) for i, v in enumerate(values)
    ]
    native = relevance.select(messages)  # type: ignore[arg-type]
    relevance.native = False
    try:
        python = relevance.select(messages)  # type: ignore[arg-type]
    finally:
        relevance.native = True
    assert [id(m) for m in native.candidates] == [id(m) for m in python.candidates]
    assert native.skipped == python.skipped
    assert [id(m) for m in native.errors] == [id(m) for m in python.errors]


def test_the_c_byte_test_on_the_edges() -> None:
    signal = b'{"before":null,"after":{"event_type":"transaction.failed","x":"allocations_no_overlap"}}'
    cases = [
        b"",
        b'{"before":null,"after":{',  # the prefix alone
        b'{"before":null,"after":{"event_type":"',  # an unterminated event type
        b'{"before":null,"after":{"event_type":""}',  # an empty one
        b'{"before":null,"after":{"event_type":"capacity.hold.created"}',  # a kind, without the marker needle
        b'{"before":null,"after":{"event_type":"a\\u0062"}',  # an escape in the event type
        signal,
        signal.replace(b"transaction.failed", b"auto_assign.attempt.1"),
        b"\x00" * 100 + b"allocations_no_overlap",
    ]
    messages = [FakeMessage(OBS, 0, i, v) for i, v in enumerate(cases)]
    native = RELEVANCE.select(messages)  # type: ignore[arg-type]
    expected = [m for m in messages if RELEVANCE(OBS, m.value())]
    assert [id(m) for m in native.candidates] == [id(m) for m in expected]
    assert len(expected) == 4, [m.value() for m in expected]


def test_the_c_byte_test_passes_on_a_failing_message() -> None:
    """A message whose accessor raises: the error surfaces (as in Python), nothing leaks or crashes."""

    class Broken(FakeMessage):
        def value(self) -> bytes | None:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        RELEVANCE.select([FakeMessage(OBS, 0, 0, b"{}"), Broken(OBS, 0, 1, b"{}")])  # type: ignore[list-item]
