"""More failure events of an incident settled for good are answered in memory (handlers/settled.py) and written
many per statement (consumer/runtime/folds.py; ``replay --apply``: one statement each): the incident's count and
sources and each event's processed marker as the database path writes them — with no statement of their own, and
their offsets completed only once written. As allocguard's login role, on the real database."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from confluent_kafka import Message

from consumer.config import RuntimeSettings
from consumer.local.settings import StackSettings
from consumer.operations.replay import Raw, replay
from consumer.runtime.loop import Runtime
from consumer.runtime.work import BatchDone, Completion, Event
from handlers import store
from handlers.detect import FailureSeen
from handlers.pipeline import IncidentResult, Remediator
from tests.integration.test_signal_batches import TOPIC, announcement, failure_value
from tests.support.process import free_port, wait_for

pytestmark = pytest.mark.stack

Conn = psycopg.Connection[Any]


@pytest.fixture
def runtime(stack_settings: StackSettings) -> Iterator[Runtime]:
    settings = RuntimeSettings(
        group_id=f"folds-{uuid.uuid4()}",
        mode="auto",
        health_host="127.0.0.1",
        health_port=free_port(),
        artifacts_dir=None,
    )
    instance = Runtime(settings, once=True)
    instance.pool.open(wait=True)
    yield instance
    instance.dispatcher.folds.close()
    instance.scheduler.shutdown()
    instance.pool.close()
    instance.consumer.close()


class Calls:
    """The database path's calls, counted (the remediator's own method still runs)."""

    def __init__(self, runtime: Runtime) -> None:
        self.failures: list[uuid.UUID] = []
        remediator = runtime.remediator
        original = remediator.on_failure

        def counted(failure: FailureSeen, triaged: store.Triage | None = None) -> IncidentResult:
            self.failures.append(failure.event_id)
            return original(failure, triaged)

        remediator.on_failure = counted  # type: ignore[method-assign]


def message(value: bytes, offset: int) -> Message:
    return Message(topic=TOPIC, partition=0, offset=offset, value=value)


def completions(runtime: Runtime, want: set[int], timeout: float = 10.0) -> tuple[set[int], list[Completion]]:
    """Offsets completed (events whose work finished and was not handed over, and events written together),
    gathered from the loop's queue until ``want`` are all there or ``timeout`` passes."""
    done: set[int] = set()
    seen: list[Completion] = []
    deadline = time.monotonic() + timeout
    while not want <= done and time.monotonic() < deadline:
        try:
            work = runtime.completions.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(work)
        if isinstance(work, BatchDone):
            done.update(offset for _, _, offset in work.events)
        elif isinstance(work, Event) and not work.handed_over:
            assert work.error is None, work.error
            done.add(work.offset)
    return done, seen


def incident_of(connect: Callable[[], Conn], booking: uuid.UUID) -> tuple[int, int]:
    with connect() as conn:
        row = conn.execute(
            "SELECT event_count, jsonb_array_length(source_events) FROM allocguard.incidents"
            " WHERE booking_id = %s AND mode = 'auto'",
            (booking,),
        ).fetchone()
    assert row is not None
    return row[0], row[1]


def marked(connect: Callable[[], Conn], events: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT event_id, outcome FROM allocguard.processed_events WHERE event_id = ANY(%s)", (events,)
        ).fetchall()
    return {row[0]: row[1] for row in rows}


def settled_booking(runtime: Runtime) -> tuple[uuid.UUID, uuid.UUID, list[Message]]:
    """A booking the platform no longer has: its hold announced, its first failure handled on the database path
    (settled ``not_needed``, for good); returns (booking, hold, the messages so far)."""
    booking, hold = uuid.uuid4(), uuid.uuid4()
    first = message(announcement(hold, booking, uuid.uuid4()), 0)
    runtime.dispatcher.take([first])
    return booking, hold, [first]


def test_more_events_of_a_settled_incident_take_no_statement_of_their_own(
    runtime: Runtime, connect: Callable[[], Conn]
) -> None:
    calls = Calls(runtime)
    booking, hold, _ = settled_booking(runtime)
    events = [uuid.uuid4() for _ in range(12)]
    runtime.dispatcher.take([message(failure_value(events[0], booking, hold), 1)])
    done, _ = completions(runtime, {1})
    assert done == {1}
    assert calls.failures == [events[0]], "the first event is the incident, on the database path"
    assert incident_of(connect, booking) == (1, 1)

    more = [message(failure_value(e, booking, hold if n % 3 == 0 else None), 2 + n) for n, e in enumerate(events[1:])]
    runtime.dispatcher.take(more)
    done, seen = completions(runtime, set(range(2, 13)))
    assert done == set(range(2, 13)), "every event completed, after it was written"
    assert calls.failures == [events[0]], "the 11 more events took no database path of their own"
    assert len([w for w in seen if isinstance(w, BatchDone)]) <= 3, "written many per statement"
    assert incident_of(connect, booking) == (12, 12), "counted into the incident, each once"
    outcomes = marked(connect, events)
    assert outcomes[events[0]] == "not_needed"
    assert {outcomes.get(e) for e in events[1:]} == {"duplicate"}, "each marked processed, as the database path does"

    # redelivered (a restart before the commit, a replay): answered again, counted nothing twice
    runtime.dispatcher.take([message(failure_value(e, booking, None), 20 + n) for n, e in enumerate(events[1:4])])
    done, _ = completions(runtime, {20, 21, 22})
    assert done == {20, 21, 22}
    assert incident_of(connect, booking) == (12, 12)
    assert calls.failures == [events[0]]


def test_events_behind_the_incident_in_their_booking_are_answered_when_their_turn_comes(
    runtime: Runtime, connect: Callable[[], Conn]
) -> None:
    """The storm's shape: the first failure still on the database path when the next ones arrive — they wait
    behind it (the booking's order) and are answered in memory when it has settled the incident."""
    calls = Calls(runtime)
    booking, hold, _ = settled_booking(runtime)
    events = [uuid.uuid4() for _ in range(3)]
    runtime.dispatcher.take([message(failure_value(e, booking, hold), 1 + n) for n, e in enumerate(events)])
    done, seen = completions(runtime, {1, 2, 3})
    assert done == {1, 2, 3}
    assert calls.failures == [events[0]], "one database path: the incident's"
    handed = sorted(w.offset for w in seen if isinstance(w, Event) and w.handed_over)
    assert handed == [2, 3], "the work items behind it handed their offsets to the folds"
    assert incident_of(connect, booking) == (3, 3)


def test_an_event_whose_incident_is_gone_goes_the_database_path(
    runtime: Runtime, connect: Callable[[], Conn], operator_connect: Callable[[], Conn]
) -> None:
    calls = Calls(runtime)
    booking, hold, _ = settled_booking(runtime)
    first, second = uuid.uuid4(), uuid.uuid4()
    runtime.dispatcher.take([message(failure_value(first, booking, hold), 1)])
    assert completions(runtime, {1})[0] == {1}
    with operator_connect() as conn:  # a person deleted the incident (the fault under test)
        conn.execute("DELETE FROM allocguard.incidents WHERE booking_id = %s", (booking,))
    runtime.dispatcher.take([message(failure_value(second, booking, hold), 2)])
    assert completions(runtime, {2})[0] == {2}
    assert calls.failures == [first, second], "the folds could not write it: the database path recorded it afresh"
    assert incident_of(connect, booking) == (1, 1)
    assert marked(connect, [second]) == {second: "not_needed"}


def test_a_database_outage_holds_the_answered_events_back_until_they_are_written(
    runtime: Runtime, connect: Callable[[], Conn]
) -> None:
    booking, hold, _ = settled_booking(runtime)
    events = [uuid.uuid4() for _ in range(3)]
    runtime.dispatcher.take([message(failure_value(events[0], booking, hold), 1)])
    assert completions(runtime, {1})[0] == {1}
    folds = runtime.dispatcher.folds
    original = folds._connect
    back = threading.Event()
    refused: list[int] = []

    def away() -> Any:
        if not back.is_set():
            refused.append(1)
            raise psycopg.OperationalError("connection refused: the database is away")
        return original()

    folds._connect = away
    runtime.dispatcher.take([message(failure_value(e, booking, hold), 2 + n) for n, e in enumerate(events[1:])])
    wait_for("the statement meets the outage twice", lambda: len(refused) >= 2, timeout=10)
    done, _ = completions(runtime, {2, 3}, timeout=0.2)
    assert done == set(), "not written: not completed (the offsets stay uncommitted)"
    assert runtime.health.degraded, "/readyz says what is held back"
    back.set()
    done, _ = completions(runtime, {2, 3}, timeout=15)
    assert done == {2, 3}, "written once the database is back, and only then completed"
    assert incident_of(connect, booking) == (3, 3)


def test_a_replay_applies_more_events_of_a_settled_incident_as_run_does(
    stack_settings: StackSettings, connect: Callable[[], Conn], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``replay --apply`` over a failed attempt's events: the first is the incident (the database path), each more
    one a fold of one statement — counted into the incident once, marked processed, reported under it; applied
    again, nothing is counted twice."""
    paths: list[uuid.UUID] = []
    original = Remediator.on_failure

    def counted(self: Remediator, failure: FailureSeen) -> IncidentResult:
        paths.append(failure.event_id)
        return original(self, failure)

    monkeypatch.setattr(Remediator, "on_failure", counted)
    booking, hold = uuid.uuid4(), uuid.uuid4()
    events = [uuid.uuid4() for _ in range(6)]
    raws = [Raw(TOPIC, 0, 0, 0, None, announcement(hold, booking, uuid.uuid4()))]
    raws += [
        Raw(TOPIC, 0, 1 + n, 0, None, failure_value(e, booking, hold if n % 2 == 0 else None))
        for n, e in enumerate(events)
    ]
    settings = RuntimeSettings(mode="auto", artifacts_dir=None)

    report = replay(settings, iter(raws), apply=True)
    assert paths == [events[0]], "one database path: the incident's"
    assert report.failure_events == 6
    (entry,) = report.incidents.values()
    assert (entry["booking_id"], entry["events"], entry["outcome"]) == (str(booking), 6, "not_needed")
    assert incident_of(connect, booking) == (6, 6), "counted into the incident, each once"
    outcomes = marked(connect, events)
    assert outcomes[events[0]] == "not_needed"
    assert {outcomes.get(e) for e in events[1:]} == {"duplicate"}

    paths.clear()
    again = replay(settings, iter(raws), apply=True)
    assert again.failure_events == 6
    assert incident_of(connect, booking) == (6, 6), "applied again: nothing counted twice"
