"""Signals handled many at a time: a batch's hold announcements are written together and its failures' first steps
read together (one round trip); what that settles is settled, the rest goes the usual way — and if the round trip
fails, every signal goes the usual way (its own work item), so none is lost. The batched read is checked against
the one-at-a-time reads it replaces. As allocguard's login role, on the real database."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any, cast

import orjson
import psycopg
import pytest
from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from psycopg.adapt import PyFormat
from psycopg.types.json import Jsonb

from consumer.config import RuntimeSettings
from consumer.local.platform import create_booking, create_venue
from consumer.local.settings import StackSettings
from consumer.local.simulator import tomorrow
from consumer.runtime.batching import BatchHandler, Item
from consumer.runtime.loop import Runtime
from consumer.runtime.routing import Signal, route
from consumer.runtime.work import BatchDone
from handlers import store
from handlers.detect import DetectionRules, FailureSeen, HoldNote, HoldSeen, classify
from handlers.pipeline import traced
from schemas import ChangeEvent, decode_message
from schemas.rows import ObservabilityEvent
from schemas.values import TstzRange
from tests.support.clock import hold_window, iso_from_now
from tests.support.process import free_port

pytestmark = pytest.mark.stack

Conn = psycopg.Connection[Any]
TOPIC = "platform.public.observability_events"
#: the source block of a real Debezium message (a captured fixture)
SOURCE = json.loads(
    json.loads(
        (Path(__file__).parents[1] / "fixtures/debezium/schemas_off/observability_events_lifecycle.json").read_text()
    )[0]["value"]
)["source"]


def announcement(hold_id: uuid.UUID, booking: uuid.UUID | None, table: uuid.UUID) -> bytes:
    start, end = hold_window()  # still valid when the batch reads it
    after = {
        "id": str(uuid.uuid4()),
        "created_at": iso_from_now(),
        "source": "capacity.hold",
        "event_type": "capacity.hold.created",
        "severity": "info",
        "context": json.dumps(
            {
                "holdId": str(hold_id),
                "tableIds": [str(table)],
                "startAt": start,
                "endAt": end,
            }
        ),
        "restaurant_id": str(uuid.uuid4()),
        "booking_id": str(booking) if booking else None,
    }
    doc = {"before": None, "after": after, "source": SOURCE, "op": "c"}
    return json.dumps(doc, separators=(",", ":")).encode()


def failure_value(event_id: uuid.UUID, booking: uuid.UUID, hold_id: uuid.UUID | None = None) -> bytes:
    context: dict[str, str] = {"error": "allocations_no_overlap"}
    if hold_id is not None:
        context["holdId"] = str(hold_id)
    after = {
        "id": str(event_id),
        "created_at": iso_from_now(),
        "source": "capacity.atomic_confirm",
        "event_type": "transaction.failed",
        "severity": "error",
        "context": json.dumps(context),
        "restaurant_id": None,
        "booking_id": str(booking),
    }
    doc = {"before": None, "after": after, "source": SOURCE, "op": "c"}
    return json.dumps(doc, separators=(",", ":")).encode()


def item(value: bytes, offset: int) -> Item:
    routed = route(TOPIC, 0, offset, None, value, DetectionRules())
    assert isinstance(routed, Signal), routed
    return routed, Message(topic=TOPIC, partition=0, offset=offset, value=value), trace.INVALID_SPAN


def completed(runtime: Runtime) -> list[int]:
    """Offsets the batch handed back to the loop as done."""
    offsets: list[int] = []
    while not runtime.completions.empty():
        work = runtime.completions.get_nowait()
        assert isinstance(work, BatchDone)
        offsets += [offset for _, _, offset in work.events]
    return offsets


def batch_handler(runtime: Runtime, submitted: list[int] | None = None) -> BatchHandler:
    """The runtime's batch handling, with what it sends the usual way recorded (when ``submitted`` is given)."""
    if submitted is None:
        return runtime.dispatcher.batch
    return sending_to(runtime, lambda routed, message, span: submitted.append(message.offset() or 0))


def sending_to(runtime: Runtime, submit: Callable[[Signal, Message, Any], None]) -> BatchHandler:
    """The runtime's batch handling, sending what goes the usual way to ``submit``."""
    return BatchHandler(
        runtime.remediator,
        runtime.scheduler,
        runtime.telemetry,
        runtime.metrics,
        runtime.jobs,
        submit=submit,
        answer=runtime.dispatcher.answer,
        done=runtime.completions.put,
    )


@pytest.fixture
def runtime(stack_settings: StackSettings) -> Iterator[Runtime]:
    settings = RuntimeSettings(
        group_id=f"hold-batches-{uuid.uuid4()}", health_host="127.0.0.1", health_port=free_port(), artifacts_dir=None
    )
    instance = Runtime(settings, once=True)
    instance.pool.open(wait=True)
    yield instance
    instance.pool.close()
    instance.consumer.close()


def test_the_assignment_index_takes_its_size_from_the_settings() -> None:
    settings = RuntimeSettings(assignment_index_size=7, health_port=free_port(), artifacts_dir=None)
    instance = Runtime(settings)
    try:
        assert instance.assignments.max_size == 7
    finally:
        instance.consumer.close()


def test_the_pools_connections_encode_json_with_orjson(runtime: Runtime) -> None:
    with runtime.pool.connection() as conn:
        assert getattr(conn.adapters.get_dumper(Jsonb, PyFormat.AUTO), "_dumps", None) is orjson.dumps


def signals(count: int, hold_ids: list[uuid.UUID] | None = None) -> list[tuple[Signal, Message]]:
    out: list[tuple[Signal, Message]] = []
    for n in range(count):
        hold_id = hold_ids[n] if hold_ids else uuid.uuid4()
        value = announcement(hold_id, uuid.uuid4(), uuid.uuid4())
        routed = route(TOPIC, 0, n, None, value, DetectionRules())
        assert isinstance(routed, Signal)
        assert isinstance(routed.found, HoldNote)
        out.append((routed, Message(topic=TOPIC, partition=0, offset=n, value=value)))
    return out


def remembered(connect: Callable[[], psycopg.Connection[Any]], hold_ids: list[uuid.UUID]) -> set[uuid.UUID]:
    with connect() as conn:
        rows = conn.execute(
            "SELECT hold_id FROM allocguard.hold_observations WHERE hold_id = ANY(%s)", (hold_ids,)
        ).fetchall()
    return {row[0] for row in rows}


def test_announcements_are_kept_in_memory_and_written_when_a_failure_recalls_one(
    runtime: Runtime, connect: Callable[[], psycopg.Connection[Any]]
) -> None:
    """A poll of hold announcements is done at once, with no statement (handlers/holds.py); the hold a failure
    recalls is written in the failure's own round trip, and only that one."""
    batch = signals(25)
    done_before = runtime.stats["completed"]
    runtime.dispatcher.take([message for _, message in batch])
    assert runtime.stats["completed"] - done_before == 25, "each announcement is done on the loop, without I/O"
    assert runtime.tracker.in_flight() == 0, "none holds its partition's commit"
    assert completed(runtime) == [], "nothing went through the batch thread"
    ids = [uuid.UUID(cast_hold(routed).hold_id) for routed, _ in batch]
    assert remembered(connect, ids) == set(), "nothing written for announcements alone"
    named = ids[7]
    failure = item(failure_value(uuid.uuid4(), uuid.UUID(cast_hold(batch[7][0]).booking_id or ""), named), 30)
    batch_handler(runtime).flush([failure])
    assert remembered(connect, ids) == {named}, "the recalled hold, and only it, is written"


def test_a_hold_announced_twice_in_a_batch_keeps_the_last(connect: Callable[[], psycopg.Connection[Any]]) -> None:
    hold_id = uuid.uuid4()
    first, second = (classify(event(hold_id, table), DetectionRules()) for table in (uuid.uuid4(), uuid.uuid4()))
    assert isinstance(first, HoldSeen)
    assert isinstance(second, HoldSeen)
    with connect() as conn:
        store.remember_holds(conn, [HoldNote.of(first), HoldNote.of(second)])
        row = conn.execute(
            "SELECT table_ids FROM allocguard.hold_observations WHERE hold_id = %s", (hold_id,)
        ).fetchone()
    assert row == (list(second.table_ids),)


def test_the_same_announcement_written_again_leaves_its_row_alone(
    connect: Callable[[], psycopg.Connection[Any]],
) -> None:
    """Each failure of an attempt recalls its hold, and a re-read of the topic brings every one again: the same
    announcement is not a new row version (xmin), and keeps its first trace link; a changed one is written."""
    seen = classify(event(uuid.uuid4(), uuid.uuid4()), DetectionRules())
    assert isinstance(seen, HoldSeen)
    note, first, later = (
        HoldNote.of(seen),
        ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"),
        ("1" * 32, "2" * 16),
    )

    def row() -> tuple[Any, ...]:
        with connect() as conn:
            found = conn.execute(
                "SELECT xmin::text, trace_id, span_id, table_ids FROM allocguard.hold_observations WHERE hold_id = %s",
                (note.hold_id,),
            ).fetchone()
        assert found is not None
        return tuple(found)

    with connect() as conn:
        store.remember_holds(conn, [note])
    untraced = row()
    with connect() as conn:
        store.remember_holds(conn, [traced(note, first)])
    written = row()
    assert written[0] != untraced[0], "a trace link where there was none is written"
    assert written[1:3] == first
    with connect() as conn:
        store.remember_holds(conn, [note])
        store.remember_holds(conn, [traced(note, later)])
    assert row() == written, "the same announcement again: the row as it was, its first trace link"
    moved = replace(note, table_ids=(str(uuid.uuid4()),))
    with connect() as conn:
        store.remember_holds(conn, [traced(moved, later)])
    changed = row()
    assert changed[0] != written[0], "a changed announcement is written"
    assert changed[1:3] == later
    assert changed[3] == [uuid.UUID(moved.table_ids[0])]


def test_a_failed_round_trip_sends_every_signal_the_usual_way(runtime: Runtime) -> None:
    failures = [item(failure_value(uuid.uuid4(), uuid.uuid4()), 10 + n) for n in range(2)]
    submitted: list[int] = []

    def refuse(*_: object) -> None:
        raise psycopg.OperationalError("the database went away")

    runtime.remediator.triage = refuse  # type: ignore[method-assign,assignment]
    batch_handler(runtime, submitted).flush(failures)
    assert submitted == [10, 11], "each signal becomes its own work item (ride-out, no verdict, no loss)"
    assert completed(runtime) == [], "nothing was done by the batch"


def test_incidents_not_recorded_together_or_traced_go_the_usual_way(runtime: Runtime) -> None:
    """Each failure below has a window and a victim that does not exist (the batch would settle it): when the
    statement that records them together fails, each goes its own way with its first steps only (its work records
    it); a failure whose trace is sampled goes its own way too, so that each step is a span of its own."""
    holds = [HoldNote.of(cast(HoldSeen, classify(event(uuid.uuid4(), uuid.uuid4()), DetectionRules()))) for _ in "ab"]
    for hold in holds:
        runtime.remediator.remember(hold)
    failures = [
        item(failure_value(uuid.uuid4(), uuid.UUID(h.booking_id or ""), uuid.UUID(h.hold_id)), 20 + n)
        for n, h in enumerate(holds)
    ]
    sent: list[Signal] = []
    handler = sending_to(runtime, lambda routed, message, span: sent.append(routed))

    def refuse(*_: object) -> None:
        raise psycopg.OperationalError("the database went away")

    together = runtime.remediator.settle_together
    runtime.remediator.settle_together = refuse  # type: ignore[method-assign,assignment]
    handler.flush(failures[:1])
    assert [s.triaged is not None and s.triaged.recorded is None for s in sent] == [True], "first steps, no record"
    assert completed(runtime) == []
    runtime.remediator.settle_together = together  # type: ignore[method-assign]
    sampled = TracerProvider().get_tracer("test").start_span("consume")
    assert sampled.is_recording()
    handler.flush([(failures[1][0], failures[1][1], sampled)])
    assert len(sent) == 2, "the sampled failure went its own way"
    assert completed(runtime) == []
    handler.flush([failures[0]])  # the same events again, untraced, the statement back: settled by the batch
    assert completed(runtime) == [20]


def test_what_a_batch_recorded_is_used_by_the_first_try_only(runtime: Runtime) -> None:
    """A failure's work given what its batch read and recorded uses it once: tried again after an outage (an
    earlier try may have pruned and assigned before the database went away), it reads everything afresh — a
    stale snapshot would plan the prune again and settle the victim it seated as not needed."""
    tries: list[store.Triage | None] = []

    def handle(found: object, triaged: store.Triage | None = None) -> None:
        tries.append(triaged)
        if len(tries) == 1:
            raise psycopg.OperationalError("the database went away")

    runtime.remediator.handle = handle  # type: ignore[method-assign,assignment]
    given = store.Triage(False, None, None)
    runtime.jobs.signal(cast_failure(item(failure_value(uuid.uuid4(), uuid.uuid4()), 0)[0]), "booking", given)
    assert tries == [given, None]


def test_a_batch_settles_what_needs_no_work_and_sends_the_rest_on(
    runtime: Runtime, connect: Callable[[], psycopg.Connection[Any]], platform_connect: Callable[[], Conn]
) -> None:
    with platform_connect() as conn:
        venue = create_venue(conn, tables=2, capacity=4)
        booked = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
    processed = uuid.uuid4()
    with connect() as conn:
        store.mark_processed(conn, processed, None, "duplicate")
    named_hold = uuid.uuid4()
    hold = item(announcement(named_hold, None, uuid.uuid4()), 0)  # a hold of no booking: its own key
    runtime.remediator.remember(cast_hold(hold[0]))
    unknown = item(failure_value(uuid.uuid4(), uuid.uuid4()), 1)  # no hold, no booking: no window
    duplicate = item(failure_value(processed, uuid.uuid4()), 2)
    real = item(failure_value(uuid.uuid4(), booked), 3)  # the booking's window: an incident
    names_hold = item(failure_value(uuid.uuid4(), uuid.uuid4(), named_hold), 4)  # the hold written just before
    submitted: list[int] = []
    batch_handler(runtime, submitted).flush([unknown, duplicate, real, names_hold])
    assert submitted == [3], "an incident whose plan acts goes the usual way"
    assert completed(runtime) == [1, 2, 4], "the unresolvable and the duplicate, then the victim that does not exist"
    with connect() as conn:
        written = conn.execute("SELECT 1 FROM allocguard.hold_observations WHERE hold_id = %s", (named_hold,))
        assert written.fetchone() == (1,), "the hold the last failure names, written before its first steps"
    for settled in (unknown, duplicate):  # as the one-at-a-time path settles them
        failure = settled[0].found
        assert isinstance(failure, FailureSeen)
        alone = runtime.remediator.on_failure(failure)
        verdict, _ = runtime.remediator.triage([failure])[0]
        assert verdict is not None
        assert (verdict.status, verdict.reason) == (alone.status, alone.reason)


def test_what_a_batch_read_goes_on_with_its_failures_and_is_not_read_again(
    runtime: Runtime,
    platform_connect: Callable[[], Conn],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The failures a batch sends on carry their first steps: their work reads them no second time, and makes the
    incident they would make alone (the booking's window; the hold written in the batch's round trip)."""
    with platform_connect() as conn:
        venue = create_venue(conn, tables=2, capacity=4)
        booked = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
        other = create_venue(conn, tables=1, capacity=4)
        held = create_booking(conn, other, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
    named_hold = uuid.uuid4()
    hold = item(announcement(named_hold, held, uuid.uuid4()), 0)
    runtime.remediator.remember(cast_hold(hold[0]))
    real = item(failure_value(uuid.uuid4(), booked), 1)
    names_hold = item(failure_value(uuid.uuid4(), held, named_hold), 2)
    sent: list[Signal] = []
    handler = sending_to(runtime, lambda routed, message, span: sent.append(routed))
    handler.flush([real, names_hold])
    assert [s.triaged is not None and s.triaged.recorded is not None for s in sent] == [True, True]
    reads: list[str] = []
    original, record = store.remember_and_triage, store.record_incident_and_snapshot

    def counted(*args: Any) -> list[store.Triage]:
        reads.append("first steps")
        return original(*args)

    def recorded(*args: Any) -> Any:
        reads.append("record")
        return record(*args)

    monkeypatch.setattr(store, "remember_and_triage", counted)
    monkeypatch.setattr(store, "record_incident_and_snapshot", recorded)
    results = [runtime.remediator.handle(s.found, s.triaged) for s in sent]
    assert reads == [], "the work items read their first steps or recorded their incident again"
    sources = [r.incident.window_source if r is not None and r.incident is not None else None for r in results]
    assert sources == ["booking", "hold"], results
    monkeypatch.setattr(store, "remember_and_triage", original)
    monkeypatch.setattr(store, "record_incident_and_snapshot", record)
    again = item(failure_value(uuid.uuid4(), booked), 3)
    alone = runtime.remediator.handle(cast_failure(again[0]))  # nothing handed over: read as before
    assert alone is not None
    assert alone.incident is not None
    assert alone.incident.window_source == "booking"


class _Scheduler:
    """What the handler asks the scheduler: whether a booking has work in flight (what it sent on)."""

    def __init__(self) -> None:
        self.keys: set[str] = set()

    def has(self, key: str) -> bool:
        return key in self.keys


def test_a_bookings_later_signals_follow_its_first_failure_or_wait_for_a_batch_of_their_own(
    runtime: Runtime, platform_connect: Callable[[], Conn]
) -> None:
    """A storm's dozen events per booking are one batch's: those behind a failure sent on go behind its work item
    at once, in order; those behind a failure the batch settled itself are answered in memory while they can be (a
    hold remembered), and from the first that needs reading on held back for the next batch, in order."""
    with platform_connect() as conn:
        venue = create_venue(conn, tables=2, capacity=4)
        booked = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
    unknown = uuid.uuid4()  # no booking row, no hold: its first failure is settled by the batch (no window)
    batch = [
        item(failure_value(uuid.uuid4(), booked), 0),  # an incident: its own work item
        item(failure_value(uuid.uuid4(), unknown), 1),
        item(failure_value(uuid.uuid4(), booked), 2),
        item(announcement(uuid.uuid4(), unknown, uuid.uuid4()), 3),
        item(failure_value(uuid.uuid4(), booked), 4),
        item(failure_value(uuid.uuid4(), unknown), 5),
    ]
    scheduler = _Scheduler()
    submitted: list[int] = []

    def submit(routed: Signal, message: Message, span: object) -> None:
        scheduler.keys.add(routed.key)
        submitted.append(message.offset() or 0)

    handler = BatchHandler(
        runtime.remediator,
        scheduler,  # type: ignore[arg-type]
        runtime.telemetry,
        runtime.metrics,
        runtime.jobs,
        submit=submit,
        answer=runtime.dispatcher.answer,
        done=runtime.completions.put,
    )
    kept = handler.handle(batch)
    assert submitted == [0, 2, 4], "the incident's failure, then its booking's later ones behind it, in order"
    assert completed(runtime) == [1, 3], "the failure with no window settled by the batch, then the hold remembered"
    assert [m.offset() for _, m, _ in kept] == [5], "the failure behind the hold waits for the next batch"
    assert handler.handle(kept) == []
    assert submitted == [0, 2, 4], "nothing more went its own way"
    assert completed(runtime) == [5], "the next batch: the hold names a window, its victim does not exist: settled"


def test_a_hold_of_a_booking_queued_for_a_batch_goes_behind_it(runtime: Runtime) -> None:
    """A booking whose failure waits for a batch: its next hold announcement is queued behind it (remembered in
    the stream's order, never before the failure is read); a booking with nothing queued keeps its hold in memory
    at once, as before."""
    dispatcher = runtime.dispatcher
    queued, other = uuid.uuid4(), uuid.uuid4()
    offered: list[tuple[str, int, bool]] = []

    def offer(key: str, item: Item, free: bool) -> bool:
        offered.append((key, item[1].offset() or 0, free))
        return key == str(queued)

    dispatcher.batches.offer = offer  # type: ignore[method-assign]
    dispatcher.batches.has = lambda key: key == str(queued)  # type: ignore[method-assign]
    dispatcher.submit = lambda *a, **k: pytest.fail("nothing goes its own way here")  # type: ignore[method-assign]
    remembered = len(runtime.remediator.memory)
    dispatcher.take(
        [
            Message(topic=TOPIC, partition=0, offset=7, value=announcement(uuid.uuid4(), queued, uuid.uuid4())),
            Message(topic=TOPIC, partition=0, offset=8, value=announcement(uuid.uuid4(), other, uuid.uuid4())),
        ]
    )
    assert offered == [(str(queued), 7, False)], "only the queued booking's hold is offered, and only behind it"
    assert len(runtime.remediator.memory) == remembered + 1, "the other booking's hold: in memory at once"


def test_the_batched_read_is_the_one_at_a_time_reads(
    connect: Callable[[], psycopg.Connection[Any]], platform_connect: Callable[[], Conn]
) -> None:
    """was_processed, recall_hold and booking_window, for failures of every shape, in one statement (for a batch,
    and for one failure)."""
    with platform_connect() as conn:
        venue = create_venue(conn, tables=3, capacity=[2, 4, 6])
        booked = create_booking(conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0), party_size=3)
    now = datetime.now(UTC)
    window = TstzRange.closed_open(now + timedelta(days=1), now + timedelta(days=1, hours=2))

    def hold(booking: uuid.UUID | None, expires: timedelta) -> HoldSeen:
        return HoldSeen(uuid.uuid4(), booking, uuid.uuid4(), (uuid.uuid4(),), window, None, now + expires)

    held_booking, twice_held = uuid.uuid4(), uuid.uuid4()
    live, expired = hold(None, timedelta(hours=1)), hold(None, -timedelta(minutes=1))
    by_booking = hold(held_booking, timedelta(hours=1))
    older, newer = hold(twice_held, timedelta(hours=1)), hold(twice_held, timedelta(hours=2))
    processed = uuid.uuid4()
    with connect() as conn:
        store.remember_holds(conn, [HoldNote.of(h) for h in (live, expired, by_booking, older)])
        store.remember_holds(
            conn, [traced(HoldNote.of(newer), ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"))]
        )
        store.mark_processed(conn, processed, None, "duplicate")

    def failure(booking: uuid.UUID, hold_id: uuid.UUID | None = None, event: uuid.UUID | None = None) -> FailureSeen:
        return FailureSeen(event or uuid.uuid4(), booking, None, hold_id, "auto_assign", "auto_assign.quote", now)

    failures = [
        failure(booked),  # the booking's window and the tables that fit its party
        failure(uuid.uuid4(), live.hold_id),  # the hold it names
        failure(held_booking, uuid.uuid4()),  # names an unknown hold: the booking's latest
        failure(held_booking),  # names none: the booking's latest
        failure(uuid.uuid4(), expired.hold_id),  # an expired memory is ignored
        failure(twice_held),  # the later of two
        failure(uuid.uuid4(), event=processed),
        failure(booked, live.hold_id),  # a hold and a window both
        failure(booked),  # the same booking twice in one batch
        failure(held_booking, live.hold_id),  # the hold it names, not its booking's latest
    ]
    with connect() as conn:
        batched = store.remember_and_triage(conn, [], failures)
        alone = [
            store.Triage(
                store.was_processed(conn, f.event_id),
                store.recall_hold(conn, f),
                store.booking_window(conn, f.booking_id),
            )
            for f in failures
        ]
        one_by_one = [store.remember_and_triage(conn, [], [f])[0] for f in failures]  # what on_failure reads
    assert batched == alone
    assert one_by_one == alone
    assert alone[0].booking is not None, "the scenario has a window"
    assert len(alone[0].booking.table_ids) == 2, "the tables that fit a party of 3"
    # the scenario covers what it says: each case found what its comment claims
    recalled = [t.hold.hold_id if t.hold else None for t in alone[1:6]]
    assert recalled == [live.hold_id, by_booking.hold_id, by_booking.hold_id, None, newer.hold_id]
    assert alone[5].hold is not None
    assert alone[5].hold.trace_id == "0af7651916cd43dd8448eb211c80319c"
    assert alone[9].hold is not None
    assert alone[9].hold.hold_id == live.hold_id
    assert alone[6].processed
    assert not any(t.processed for t in alone[:6])


def event(hold_id: uuid.UUID, table: uuid.UUID) -> ObservabilityEvent:
    """The announcement's row as the full path decodes it."""
    record = decode_message(TOPIC, 0, 0, None, announcement(hold_id, uuid.uuid4(), table))
    assert isinstance(record, ChangeEvent)
    assert isinstance(record.after, ObservabilityEvent)
    return record.after


def cast_hold(routed: Signal) -> HoldNote:
    assert isinstance(routed.found, HoldNote)
    return routed.found


def cast_failure(routed: Signal) -> FailureSeen:
    assert isinstance(routed.found, FailureSeen)
    return routed.found


def test_the_fast_reader_stores_what_the_full_path_stores(connect: Callable[[], psycopg.Connection[Any]]) -> None:
    """Window, tables, expiry, booking, trace ids: the same columns whether the announcement was read by the fast
    reader (handlers/announcements.py) or decoded by the models and classified."""
    table = uuid.uuid4()
    full = classify(event(uuid.uuid4(), table), DetectionRules())
    assert isinstance(full, HoldSeen)
    routed = route(TOPIC, 0, 0, None, announcement(uuid.uuid4(), full.booking_id, table), DetectionRules())
    assert isinstance(routed, Signal)
    assert routed.row is None, "the plain shape takes the fast reader"
    alone, batched = HoldNote.of(full), cast_hold(routed)
    ids = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    with connect() as conn:
        store.remember_holds(conn, [traced(alone, ids)])
        store.remember_holds(conn, [traced(batched, ids)])
        rows = [
            conn.execute(
                "SELECT table_ids, attempt_window, require_adjacency, expires_at, restaurant_id IS NULL, trace_id,"
                " span_id FROM allocguard.hold_observations WHERE hold_id = %s",
                (h,),
            ).fetchone()
            for h in (alone.hold_id, batched.hold_id)
        ]
    assert rows[0] is not None
    assert rows[0] == rows[1]


def test_a_caught_up_stream_sends_signals_on_at_once_and_a_backlog_batches_them(runtime: Runtime) -> None:
    """Batching pays under a backlog (a full poll); a caught-up stream's signal goes on alone, at once."""
    sent: list[int] = []
    batched: list[int] = []
    dispatcher = runtime.dispatcher

    def submit(routed: Signal, message: Message, span: object, *, memory: bool = True) -> None:
        sent.append(message.offset() or 0)

    dispatcher.submit = submit  # type: ignore[method-assign]

    def offer(key: str, item: Item, free: bool) -> bool:
        if free:
            batched.append(item[1].offset() or 0)
            return True
        return False

    dispatcher.batches.offer = offer  # type: ignore[method-assign]
    noise = json.loads(failure_value(uuid.uuid4(), uuid.uuid4()))
    noise["after"].update(event_type="auto_assign.attempt.1", source="auto_assign", context="{}")
    quiet = json.dumps(noise, separators=(",", ":")).encode()

    def poll(first: int, signal_at: int, size: int) -> list[Message]:
        return [
            Message(
                topic=TOPIC,
                partition=0,
                offset=first + n,
                value=failure_value(uuid.uuid4(), uuid.uuid4()) if n == signal_at else quiet,
            )
            for n in range(size)
        ]

    dispatcher.take(poll(0, 0, 1))
    assert (sent, batched) == ([0], []), "one message, caught up: sent on at once"
    dispatcher.take(poll(100, 5, 64))
    assert (sent, batched) == ([0], [105]), "a full poll: batched"

    # the backlog's size is a setting (ALLOCGUARD_BATCH_BACKLOG): raised, the same poll counts as caught up
    dispatcher.settings = dispatcher.settings.model_copy(update={"batch_backlog": 65})
    dispatcher.take(poll(200, 5, 64))
    assert (sent, batched) == ([0, 205], [105]), "64 messages, below a backlog of 65: sent on at once"


def test_expired_hold_memories_are_swept(connect: Callable[[], psycopg.Connection[Any]]) -> None:
    now = datetime.now(UTC)
    window = TstzRange.closed_open(now, now + timedelta(hours=2))
    expired, live = (
        HoldSeen(uuid.uuid4(), None, uuid.uuid4(), (uuid.uuid4(),), window, None, now + delta)
        for delta in (-timedelta(seconds=1), timedelta(hours=1))
    )
    with connect() as conn:
        store.remember_holds(conn, [HoldNote.of(expired), HoldNote.of(live)])
        assert store.sweep_holds(conn) >= 1
        assert remembered(lambda: conn, [expired.hold_id, live.hold_id]) == {live.hold_id}
