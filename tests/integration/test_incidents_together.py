"""Incidents recorded and settled many at a time (a batch under a backlog: ``Remediator.settle_together``) end as
the same incidents handled one at a time (``Remediator.on_failure``): twin scenarios, each in a venue of its own,
one twin handled alone and the other with the rest of its batch — an orphan to prune, an owner cancelled without
release, a victim already seated, a victim with nothing in its way, a victim that does not exist — then one more
failure event of every incident. As allocguard's login role, on the real database."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from typing import Any

import psycopg
import pytest

from consumer.local.platform import create_booking, create_venue
from consumer.local.simulator import PlatformApp, orphan_by_reseat, stale_by_status, tomorrow
from handlers.detect import FailureSeen, HoldNote
from handlers.pipeline import IncidentResult, RemediationSettings, Remediator
from handlers.retry import Attempt, RetryPolicy, SqlAssign
from schemas.records import Mode

pytestmark = [pytest.mark.e2e, pytest.mark.stack]
Conn = psycopg.Connection[Any]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def remediator(connect: Callable[[], Conn]) -> Remediator:
    settings = RemediationSettings(
        mode=Mode.AUTO,
        artifacts_dir=None,
        retry=RetryPolicy(max_attempts=2, initial_wait_s=0.01, max_wait_s=0.02),
    )
    return Remediator(connect, SqlAssign(connect), settings, sleep=lambda s: None)


def failure(booking: uuid.UUID, hold: HoldNote | None = None) -> FailureSeen:
    return FailureSeen(
        event_id=uuid.uuid4(),
        booking_id=booking,
        restaurant_id=None,
        hold_id=uuid.UUID(hold.hold_id) if hold is not None else None,
        source="capacity.atomic_confirm",
        event_type="transaction.failed",
        created_at=datetime.now(UTC),
    )


def twins(app: PlatformApp, rem: Remediator) -> dict[str, list[FailureSeen]]:
    """Each kind of incident twice, in venues of their own: (the failure of one twin, of the other)."""
    kinds: dict[str, list[FailureSeen]] = {"orphan": [], "stale": [], "seated": [], "free": [], "gone": []}
    for _ in range(2):
        victim = orphan_by_reseat(app, job_attempts=0).victim_id
        assert victim is not None
        kinds["orphan"].append(failure(victim))
        victim = stale_by_status(app).victim_id
        assert victim is not None
        kinds["stale"].append(failure(victim))
        venue = create_venue(app.conn, tables=2, capacity=4)
        kinds["seated"].append(failure(app.book(venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))))
        venue = create_venue(app.conn, tables=2, capacity=4)
        free = create_booking(app.conn, venue, day=tomorrow(), start=dtime(19, 0), end=dtime(21, 0))
        kinds["free"].append(failure(free))
        venue = create_venue(app.conn, tables=1, capacity=2)
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        hold = HoldNote(
            hold_id=str(uuid.uuid4()),
            booking_id=str(uuid.uuid4()),  # no such booking
            restaurant_id=str(venue.restaurant_id),
            table_ids=(str(venue.table_ids[0]),),
            start=start,
            end=start + timedelta(hours=2),
            require_adjacency=None,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        rem.remember(hold)
        kinds["gone"].append(failure(uuid.UUID(hold.booking_id or ""), hold))
    return kinds


def together(rem: Remediator, failures: list[FailureSeen]) -> list[IncidentResult]:
    """As the batch thread takes them: first steps, then the incidents together, then each one's own work for
    what the batch left (given the record)."""
    out: list[IncidentResult | None] = []
    triaged = rem.triage(failures)
    need = [(f, found) for f, (verdict, found) in zip(failures, triaged, strict=True) if verdict is None]
    assert len(need) == len(failures), "every twin has an incident to record"
    for (f, _), (result, found) in zip(need, rem.settle_together(need), strict=True):
        if result is None:
            assert found.recorded is not None, "what goes on carries its record"
            result = rem.on_failure(f, found)
        out.append(result)
    assert all(r is not None for r in out)
    return [r for r in out if r is not None]


def both_ways(
    rem: Remediator, kinds: dict[str, list[FailureSeen]], connect: Callable[[], Conn]
) -> tuple[dict[str, IncidentResult], dict[str, IncidentResult]]:
    """Each kind's first twin handled alone, the second twins together; what the database says of each pair is
    the same."""
    alone = {kind: rem.on_failure(pair[0]) for kind, pair in kinds.items()}
    batched = dict(zip(kinds, together(rem, [pair[1] for pair in kinds.values()]), strict=True))
    with connect() as conn:
        for kind, pair in kinds.items():
            assert seen(conn, pair[0], alone[kind]) == seen(conn, pair[1], batched[kind]), kind
    return alone, batched


def plain(text: Any) -> Any:
    return _UUID.sub("<id>", text) if isinstance(text, str) else text


def seen(conn: Conn, f: FailureSeen, result: IncidentResult) -> tuple[Any, ...]:
    """What the database says of the failure's incident and event, ids left out."""
    incident = conn.execute(
        "SELECT status, status_reason, event_count, window_source, outcome->>'status',"
        " outcome->'decisions', cardinality(table_ids) FROM allocguard.incidents WHERE id = %s",
        (result.incident_id,),
    ).fetchone()
    marker = conn.execute(
        "SELECT outcome, incident_id = %s FROM allocguard.processed_events WHERE event_id = %s",
        (result.incident_id, f.event_id),
    ).fetchone()
    assert incident is not None
    return (result.status, plain(result.reason), tuple(plain(v) for v in incident), marker)


def test_incidents_settled_together_end_as_those_settled_one_at_a_time(
    app: PlatformApp, connect: Callable[[], Conn]
) -> None:
    rem = remediator(connect)
    kinds = twins(app, rem)
    alone, batched = both_ways(rem, kinds, connect)
    statuses = {kind: result.status for kind, result in alone.items()}
    assert statuses["orphan"] == "resolved", statuses  # pruned and seated: the work went on after the batch
    assert statuses["seated"] == statuses["gone"] == "not_needed", statuses  # settled by the batch itself
    assert batched["orphan"].prunes, "the orphan was pruned by the work that took the batch's record"

    # one more event of every incident: a settled one's is a duplicate, counted once into it
    again = {kind: [failure(f.booking_id, None) for f in pair] for kind, pair in kinds.items()}
    for kind, pair in kinds.items():
        if kind == "gone":  # the window is the hold's: the next event names it too
            again[kind] = [replace_hold(f, g) for f, g in zip(again[kind], pair, strict=True)]
    alone, batched = both_ways(rem, again, connect)
    with connect() as conn:
        for kind, pair in again.items():
            first = seen(conn, pair[0], alone[kind])
            if alone[kind].status == "duplicate":
                assert first[2][2] == 2, f"{kind}: the second event is counted into the incident: {first}"
                assert first[3] == ("duplicate", True), f"{kind}: and marked processed as one more of it"
    assert {batched[k].status for k in ("orphan", "seated", "gone")} == {"duplicate"}


def replace_hold(f: FailureSeen, like: FailureSeen) -> FailureSeen:
    return FailureSeen(f.event_id, f.booking_id, f.restaurant_id, like.hold_id, f.source, f.event_type, f.created_at)


def test_a_victim_seated_by_a_try_that_did_not_live_to_record_it_is_resolved(
    app: PlatformApp, connect: Callable[[], Conn]
) -> None:
    """A try that pruned and seated the victim with allocguard's key, then failed before its outcome was written;
    the next try plans from a snapshot read before all that (the batch's): it plans the prune again, finds it
    done, and its retry finds the victim confirmed — by allocguard's own key, so the incident is resolved, not
    "not needed" (resolved ⇔ seated by allocguard, as the chaos suite checks)."""
    victim = orphan_by_reseat(app, job_attempts=0).victim_id
    assert victim is not None
    rem = remediator(connect)
    f = failure(victim)
    found = rem.triage([f])[0][1]
    [(verdict, recorded)] = rem.settle_together([(f, found)])
    assert verdict is None, "an orphan to prune: the plan acts"

    def die(attempt: Attempt) -> None:
        if attempt.outcome == "assigned":
            raise RuntimeError("killed after the assignment committed")

    rem.hooks.on_attempt = die
    with pytest.raises(RuntimeError):
        rem.on_failure(f, recorded)
    rem.hooks.on_attempt = None
    result = rem.on_failure(f, recorded)  # the stale record and snapshot, as a try that read them before
    assert [p.decision.value for p in result.plans] == ["prune_and_retry"], "planned from the stale snapshot"
    assert (result.status, result.reason) == (
        "resolved",
        "assigned by allocguard (its idempotency key): the booking is confirmed",
    )
