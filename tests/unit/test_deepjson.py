"""The deep-JSON fallback agrees with the standard library wherever that one can parse, refuses what it refuses,
and parses what PostgreSQL stores past orjson's 1,024 levels — so a failure row with such a context is handled."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.runtime.routing import DeadLetter, Signal, route
from handlers.detect import DetectionRules, FailureSeen
from schemas import deepjson

values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=30,
)


@given(values, st.sampled_from([None, 0, 2]))
def test_it_reads_what_json_reads(value: Any, indent: int | None) -> None:
    text = json.dumps(value, indent=indent)
    assert deepjson.loads(text) == json.loads(text)


@given(st.text(max_size=40))
def test_it_refuses_what_json_refuses(text: str) -> None:
    try:
        expected = json.loads(text)
    except ValueError:
        with pytest.raises(deepjson.DeepJSONError):
            deepjson.loads(text)
    else:
        if text.strip() not in ("NaN", "Infinity", "-Infinity"):
            assert deepjson.loads(text) == expected


@pytest.mark.parametrize("text", ['{"a": 1,}', "[1 2]", '{"a" 1}', "[", '"open', "tru", "01", "[] []", "NaN"])
def test_broken_json_is_refused(text: str) -> None:
    with pytest.raises(deepjson.DeepJSONError):
        deepjson.loads(text)


def failure(context: str) -> bytes:
    after = {
        "id": str(uuid.uuid4()),
        "created_at": "2026-12-02T10:00:00Z",  # date-lint: recorded (route does not judge age)
        "source": "capacity.atomic_confirm",
        "event_type": "transaction.failed",
        "severity": "error",
        "context": context,
        "booking_id": str(uuid.uuid4()),
    }
    source = {
        "version": "3.6.1.Final",
        "connector": "postgresql",
        "name": "platform",
        "ts_ms": 1,
        "db": "platform",
        "schema": "public",
        "table": "observability_events",
        "lsn": 1,
    }
    return json.dumps({"before": None, "after": after, "source": source, "op": "c", "ts_ms": 1}).encode()


def test_a_failure_row_nested_as_deep_as_postgresql_stores_is_handled_and_a_deeper_one_refused() -> None:
    topic = "platform.public.observability_events"
    for depth, handled in ((1_100, True), (10_000, True), (100_000, False)):
        nested = '{"a":' * depth + "1" + "}" * depth
        context = f'{{"holdId": "{uuid.uuid4()}", "error": "allocations_no_overlap", "extra": {nested}}}'
        routed = route(topic, 0, depth, None, failure(context), DetectionRules())
        if handled:
            assert isinstance(routed, Signal), routed
            assert isinstance(routed.found, FailureSeen)
        else:
            assert isinstance(routed, DeadLetter)
            assert "nested deeper than 65536 levels" in routed.error.reason
