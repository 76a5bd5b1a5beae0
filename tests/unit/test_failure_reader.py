"""The fast reader of ``allocations_no_overlap`` failures (handlers/announcements.py ``read_failure``) never decides
differently from the models: for generated failure events of each kind the platform emits — the plain shape, then
each part of it bent (a field missing, another type, an odd uuid or instant, another op, a schema wrapper, extra
keys, the failure text elsewhere) — either it steps aside (None: the full path decides) or it answers exactly what
the full path answers: a failure signal with the same op, key and failure."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from consumer.runtime.routing import FAILURE, Signal, route, route_decoded
from handlers.announcements import read_failure
from handlers.detect import DetectionRules, FailureRule, FailureSeen
from tests.support.clock import iso_from_now
from tests.unit.test_announcements import FIELDS as HOLD_FIELDS
from tests.unit.test_announcements import KEYS, TOPIC, base, encode, mutate, mutations_of

RULES = DetectionRules()
NO_ZONE = "2030-01-01T00:00:00"  # date-lint: recorded (a form the reader leaves to the models; never compared to now)
BC = "2030-01-01 00:00:00 BC"  # date-lint: recorded
#: the three failure events of a failed attempt (bench/traffic.py, shared/domain.md §3): source, type, text key
KINDS = [
    ("capacity.atomic_confirm", "transaction.failed", "error"),
    ("auto_assign", "auto_assign.quote", "planner_error"),
    ("auto_assign", "auto_assign.attempt_error", "error"),
]


def failure_doc(kind: int, with_hold: bool = True) -> dict[str, Any]:
    source, event_type, text_key = KINDS[kind]
    doc = base()
    context: dict[str, Any] = {text_key: "assign failed: allocations_no_overlap (23P01)", "attempt_index": 1}
    if with_hold:
        context["holdId"] = str(uuid.uuid4())
    doc["after"].update(
        source=source, event_type=event_type, severity="error", context=context, created_at=iso_from_now()
    )
    return doc


#: where a bend lands: the envelope, source block and row as the hold reader's tests bend them, and the failure's
#: context (its texts, its hold id, a key the models ignore)
FIELDS = {
    **{place: HOLD_FIELDS[place] for place in ("envelope", "source", "after")},
    "context": ["error", "planner_error", "holdId", "attempt_index", "bookingId"],
}
MUTATION = mutations_of(FIELDS)


def agree(key: bytes | None, value: bytes, rules: DetectionRules = RULES) -> FailureSeen | None:
    """The fast reader's answer, checked against the full path's; the failure when the reader answered."""
    read = read_failure(key, value, rules)
    full = route_decoded(TOPIC, 0, 0, key, value, rules)
    if read is None:
        return None
    op, failure = read
    assert isinstance(full, Signal), f"the reader found a failure where the full path says {full!r}"
    assert full.kind == FAILURE
    assert full.op == op
    assert full.key == str(failure.booking_id)
    assert full.found == failure, "the reader's failure differs from the classified one"
    # and route (which tries the reader after the hold reader) answers the same, without a decoded row
    assert route(TOPIC, 0, 0, key, value, rules) == Signal(op, None, full.key, FAILURE, failure)
    return failure


def test_each_kind_in_the_plain_shape_is_read_by_the_fast_reader() -> None:
    for kind in range(len(KINDS)):
        for with_hold in (True, False):
            failure = agree(b'{"id":"x"}', encode(failure_doc(kind, with_hold), True, False))
            assert failure is not None, (kind, with_hold)
            assert (failure.hold_id is not None) == with_hold
    assert agree(None, encode(failure_doc(0), True, False)) is not None


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.integers(0, len(KINDS) - 1),
    mutations=st.lists(MUTATION, max_size=3),
    key=KEYS,
    context_as_text=st.booleans(),
    spacing=st.booleans(),
)
@example(kind=0, mutations=[], key=None, context_as_text=True, spacing=False)
def test_the_fast_reader_agrees_with_the_models(
    kind: int, mutations: list[tuple[str, str, str, Any]], key: bytes | None, context_as_text: bool, spacing: bool
) -> None:
    doc = failure_doc(kind)
    for mutation in mutations:
        mutate(doc, mutation)
    agree(key, encode(doc, context_as_text, spacing))


@settings(max_examples=300, deadline=None)
@given(at=st.integers(min_value=0, max_value=1200), junk=st.binary(min_size=1, max_size=12))
def test_bytes_spliced_into_a_failure(at: int, junk: bytes) -> None:
    value = encode(failure_doc(at % len(KINDS)), True, False)
    agree(None, value[:at] + junk + value[at:])


def test_what_it_leaves_to_the_models() -> None:
    """Each of these is left to the full path (its verdict, skip or signal or dead letter, stands)."""
    cases: dict[str, Any] = {
        "an upper-case hold id": lambda d: d["after"]["context"].update(holdId=str(uuid.uuid4()).upper()),
        "a hold id of another type": lambda d: d["after"]["context"].update(holdId=7),
        "an upper-case booking id": lambda d: d["after"].update(booking_id=str(uuid.uuid4()).upper()),
        "no booking": lambda d: d["after"].update(booking_id=None),
        "an update": lambda d: d.update(op="u"),
        "a context that is a list": lambda d: d["after"].update(context=["allocations_no_overlap"]),
        "the text under another key": lambda d: d["after"].update(context={"detail": "allocations_no_overlap"}),
        "a second event type": lambda d: d["after"].update(
            source="auto_assign", event_type="auto_assign.quote", extra=None
        ),
        "a time without a zone": lambda d: d["after"].update(created_at=NO_ZONE),
        "a time in another form": lambda d: d["after"].update(created_at=BC),
        "a sequence that is no list": lambda d: d["source"].update(sequence='{"a":1}'),
        "a hold announcement": lambda d: d["after"].update(source="capacity.hold", event_type="capacity.hold.created"),
    }
    for name, change in cases.items():
        doc = failure_doc(0)
        change(doc)
        value = encode(doc, True, False)
        if name == "a second event type":  # the same key twice, ambiguous JSON: the full path dead-letters it
            value = value.replace(b'"extra":null', b'"event_type":"auto_assign.attempt_error"')
        assert read_failure(None, value, RULES) is None, name
        agree(None, value)


def test_the_rules_decide_what_a_failure_is() -> None:
    """Another rule set: its own sources, types, keys and text (the reader follows them, as classify does)."""
    rules = DetectionRules(
        failures=[FailureRule(source="svc", event_type="svc.failed", context_key="why", contains="exclusion")],
        failure_hold_id_key="hold",
    )
    doc = failure_doc(0)
    hold = str(uuid.uuid4())
    doc["after"].update(source="svc", event_type="svc.failed", context={"why": "an exclusion broke", "hold": hold})
    failure = agree(None, encode(doc, True, False), rules)
    assert failure is not None
    assert str(failure.hold_id) == hold
    assert read_failure(None, encode(failure_doc(0), True, False), rules) is None  # the default rule's event
    agree(None, encode(failure_doc(0), True, False), rules)


def test_how_many_the_reader_answers() -> None:
    """Not a test of agreement but of use: the generated plain failures are read fast (not all left aside)."""
    answered = sum(
        read_failure(None, encode(failure_doc(n % len(KINDS), n % 2 == 0), True, n % 3 == 0), RULES) is not None
        for n in range(60)
    )
    assert answered >= 40, answered
