"""The remediation path for one observability event: detect → incident → evidence/plan → prune → retry.

Kafka-agnostic and telemetry-free: the consumer feeds decoded ``observability_events`` rows in; tests and the
CLI feed rows read from the database. Connections come from ``connect`` and must be autocommit (each step
opens its own explicit transaction).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict, Field

from handlers import platform, store
from handlers.detect import DetectionRules, FailureSeen, HoldNote, HoldSeen, classify
from handlers.errors import HoldConflictError, NewBlockerError
from handlers.evidence import Snapshot, make_plan
from handlers.execute import PruneResult, apply_plan, write_artifacts
from handlers.holds import HoldMemory
from handlers.policy import Policy, StalePolicy, approval_needed
from handlers.retry import AssignRequest, AssignStrategy, Attempt, RetryOutcome, RetryPolicy, run_retry
from handlers.settled import Settled, SettledMemory
from schemas.records import Decision, Incident, Mode, Plan
from schemas.rows import ObservabilityEvent

Conn = psycopg.Connection[Any]
#: a connection factory usable in ``with``: psycopg.connect(..., autocommit=True) or a pool's .connection
Connect = Callable[[], AbstractContextManager[Conn]]

#: incident statuses after which further failure events of the same (booking, window) change nothing (an
#: ``expired`` plan's incident is planned afresh by the next failure event)
SETTLED = frozenset({"resolved", "not_needed", "manual_review", "awaiting_approval", "rejected"})


class PlanDecisionError(RuntimeError):
    """A pending plan cannot be decided: unknown, already decided, or expired. Not retryable."""

    retryable = False


class SelfApprovalError(PlanDecisionError):
    """The person who requested a plan tried to approve it: another person must (policy ``allow_self_approval``)."""


class RemediationSettings(BaseModel):
    model_config = ConfigDict(frozen=True)
    mode: Mode = Mode.DRY_RUN
    #: an allocation younger than this is never pruned (a confirm may be between its writes)
    grace: timedelta = timedelta(minutes=2)
    actor: str = "allocguard"
    #: the person whose one-off command this is: the plans it makes are theirs (never approved by them alone)
    requested_by: str | None = None
    artifacts_dir: Path | None = Path("artifacts")
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    #: how many times a newly appeared blocker triggers a fresh detection and plan
    replans: int = 1
    #: which plans run at once and which wait for a person (caps, allow/deny lists, stale-by-status)
    policy: Policy = Field(default_factory=Policy)


@dataclass
class IncidentResult:
    status: str
    reason: str
    incident_id: UUID | None = None
    incident: Incident | None = None
    plans: list[Plan] = field(default_factory=list)
    prunes: list[PruneResult] = field(default_factory=list)
    retry: RetryOutcome | None = None
    event_count: int = 0
    #: the failure event that triggered this run; marked processed with the final state
    event_id: UUID | None = None
    #: (trace id, span id) of the incident span, when tracing records
    trace: tuple[str, str] | None = None
    #: for a wait: when the incident is due to be planned again
    recheck_at: datetime | None = None
    #: the pending plan that waits for a person
    plan_id: UUID | None = None
    #: for a duplicate: the status the incident was already in
    settled_as: str | None = None


def incident_for(conn: Conn, failure: FailureSeen, hold: HoldSeen | None) -> Incident | None:
    """The incident a failure belongs to: the hold's tables and window, or the booking fallback."""
    return incident_from(failure, hold, lambda: store.booking_window(conn, failure.booking_id))


def incident_from(
    failure: FailureSeen, hold: HoldSeen | None, booking: Callable[[], store.BookingWindow | None]
) -> Incident | None:
    """:func:`incident_for` with the booking's window read by ``booking`` (only when the hold does not do)."""
    if hold is not None and (hold.booking_id is None or hold.booking_id == failure.booking_id):
        restaurant = failure.restaurant_id or hold.restaurant_id
        if restaurant is not None:
            return Incident(
                booking_id=failure.booking_id,
                restaurant_id=restaurant,
                window=hold.window,
                table_ids=tuple(sorted(hold.table_ids, key=str)),
                hold_id=hold.hold_id,
                require_adjacency=hold.require_adjacency,
                window_source="hold",
            )
    return store.incident_of_booking(failure, booking())


def settled_early(failure: FailureSeen, found: store.Triage) -> IncidentResult | None:
    """The outcome :meth:`Remediator.on_failure` would reach before writing anything — a duplicate, or a failure
    with no window to work with — from a :func:`store.remember_and_triage` row; None when the failure needs the
    whole path."""
    if found.processed:
        return IncidentResult("duplicate", "event already processed")
    if incident_from(failure, found.hold, lambda: found.booking) is None:
        return IncidentResult("unresolvable", _NO_WINDOW.format(failure.booking_id))
    return None


_NO_WINDOW = "booking {} has no window to work with"
_STILL_HELD = "deferred: a hold still covers the table"


class SpanHandle(Protocol):
    def set(self, key: str, value: str | int | float | bool | list[str]) -> None: ...

    def trace_ids(self) -> tuple[str, str] | None:
        """(trace id, span id) as hex, when a real span is recording."""


class _NoSpan:
    def set(self, key: str, value: str | int | float | bool | list[str]) -> None:
        return None

    def trace_ids(self) -> tuple[str, str] | None:
        return None


@contextmanager
def _no_span(name: str, attributes: dict[str, Any], links: list[tuple[str, str]] | None = None) -> Iterator[SpanHandle]:
    yield _NoSpan()


SpanFactory = Callable[[str, dict[str, Any], list[tuple[str, str]] | None], AbstractContextManager[SpanHandle]]


@dataclass
class Hooks:
    """Seams for instrumentation and fault injection; handler logic never depends on what is behind them."""

    on_attempt: Callable[[Attempt], None] | None = None
    on_pruned: Callable[[PruneResult], None] | None = None
    #: opens a span (name, attributes, links as (trace id, span id) hex pairs); a no-op by default
    span: SpanFactory = _no_span


def failure_attributes(failure: FailureSeen) -> dict[str, Any]:
    return {
        "allocguard.booking.id": str(failure.booking_id),
        "allocguard.event.id": str(failure.event_id),
        "allocguard.event.source": failure.source,
        "allocguard.event.type": failure.event_type,
    }


def hold_attributes(hold: HoldNote) -> dict[str, Any]:
    """The span attributes of a remembered hold announcement."""
    return {
        "allocguard.hold.id": hold.hold_id,
        "allocguard.booking.id": str(hold.booking_id),
        "allocguard.hold.table_ids": list(hold.table_ids),
        "allocguard.hold.window": hold.window.to_postgres(),
    }


def traced(hold: HoldNote, ids: tuple[str, str] | None) -> HoldNote:
    """The note with the span that remembered it (for trace links from the incident it may explain)."""
    return hold if ids is None else replace(hold, trace_id=ids[0], span_id=ids[1])


class Remediator:
    def __init__(
        self,
        connect: Connect,
        strategy: AssignStrategy,
        settings: RemediationSettings | None = None,
        rules: DetectionRules | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        on_attempt: Callable[[Attempt], None] | None = None,
        hooks: Hooks | None = None,
    ) -> None:
        self._connect = connect
        self.strategy = strategy
        self.settings = settings or RemediationSettings()
        self.rules = rules or DetectionRules()
        self._sleep = sleep
        self._clock = clock
        self.hooks = hooks or Hooks(on_attempt=on_attempt)
        #: announced holds, written down only when a failure recalls one (handlers/holds.py)
        self.memory = HoldMemory()
        #: incidents settled for good: their later failure events are answered without a round trip
        self.settled = SettledMemory()

    def observe(self, event: ObservabilityEvent) -> IncidentResult | None:
        """Handle one ``observability_events`` row (a backfill's, re-read from the database); None when it is not
        a signal."""
        signal = classify(event, self.rules)
        if signal is None:
            return None
        return self.handle(HoldNote.of(signal) if isinstance(signal, HoldSeen) else signal)

    def handle(self, signal: HoldNote | FailureSeen, triaged: store.Triage | None = None) -> IncidentResult | None:
        """Handle one signal, as the consumer classified it: a hold remembered (None), a failure's incident
        (``triaged``: its first steps, when a batch read them already)."""
        if isinstance(signal, HoldNote):
            self.remember(signal)
            return None
        return self.on_failure(signal, triaged)

    def remember(self, hold: HoldNote) -> None:
        """A hold announcement, kept in memory (with the span that saw it, when tracing)."""
        with self.hooks.span("allocguard.hold.remembered", hold_attributes(hold), None) as span:
            self.memory.remember(traced(hold, span.trace_ids()))

    def triage(self, failures: list[FailureSeen]) -> list[tuple[IncidentResult | None, store.Triage]]:
        """Many failures' first steps in one statement (after the holds they recall are written, in the same round
        trip): for each failure, the outcome when it is settled before anything is written (a duplicate, no
        window), else None (it needs :meth:`on_failure`, which is given what was read here: not read twice), and
        what was read."""
        with self._connect() as conn:
            found = store.remember_and_triage(conn, self._holds_for(conn, failures), failures)
        return [(settled_early(failure, row), row) for failure, row in zip(failures, found, strict=True)]

    def _holds_for(self, conn: Conn, failures: list[FailureSeen]) -> list[HoldNote]:
        """The holds these failures recall, to be written before their first steps read them: from memory, else
        from the platform's own rows (what this process never saw or no longer holds)."""
        notes: list[HoldNote] = []
        unknown: list[FailureSeen] = []
        for failure in failures:
            hold = self.memory.recall(failure)
            if hold is None:
                unknown.append(failure)
            else:
                notes.append(hold)
        if unknown:
            notes.extend(self._announced(conn, unknown))
        return notes

    def _announced(self, conn: Conn, failures: list[FailureSeen]) -> list[HoldNote]:
        """The holds these failures recall, from the platform's ``observability_events`` rows, classified as the
        stream's would be — and kept in memory for the next failures of the same bookings."""
        rules = self.rules
        rows = store.hold_announcements(
            conn, sorted({f.booking_id for f in failures}), rules.hold.source, rules.hold.event_type
        )
        by_booking: dict[str, list[HoldNote]] = {}
        for row in rows:
            try:
                seen = classify(ObservabilityEvent.model_validate(row), rules)
            except ValueError:  # a row the stream would have dead-lettered: no hold
                continue
            if isinstance(seen, HoldSeen) and seen.booking_id is not None:
                by_booking.setdefault(str(seen.booking_id), []).append(HoldNote.of(seen))
        found: dict[str, HoldNote] = {}
        for failure in failures:
            announced = by_booking.get(str(failure.booking_id), [])
            if failure.hold_id is not None:
                named = [h for h in announced if h.hold_id == str(failure.hold_id)]
                hold = named[-1] if named else None
            else:
                hold = announced[-1] if announced else None
            if hold is not None:
                found[hold.hold_id] = hold
        for hold in found.values():
            self.memory.remember(hold)
        return list(found.values())

    def known_incident(self, failure: FailureSeen) -> Settled | None:
        """The incident settled for good that this failure is one more event of, known in memory (its hold, in
        the stream's order, names the window); None when only :meth:`on_failure` can tell. The caller folds the
        event into it (:func:`handlers.store.fold_duplicates`) before its offset is committed. Only a mode that
        marks events processed answers here (a dry run's incidents are planned again)."""
        if not self.settings.mode.acts:
            return None
        return self.settled.answer(failure, self.memory.recall(failure))

    def on_failure(self, failure: FailureSeen, triaged: store.Triage | None = None) -> IncidentResult:
        result = self._on_failure(failure, triaged)
        self._note(result)
        return result

    def answered(self, failure: FailureSeen, known: Settled) -> None:
        """The span of a failure event answered in memory (when tracing records): one more event of the incident,
        linked to the span that handled it, as the database path's duplicate is."""
        attributes = {
            **failure_attributes(failure),
            "allocguard.incident.id": str(known.incident_id),
            "allocguard.outcome.status": "duplicate",
            "allocguard.answered": "memory",
        }
        with self.hooks.span("allocguard.incident", attributes, [known.trace] if known.trace else None):
            pass

    def _on_failure(self, failure: FailureSeen, triaged: store.Triage | None) -> IncidentResult:
        """``triaged``: the first steps a batch read for this failure (its hold is written, it was not processed
        then; each later step reads the database again, and the executor re-proves every fact under its locks)."""
        span = self.hooks.span
        attributes = failure_attributes(failure)
        with self._connect() as conn:
            found = triaged or store.remember_and_triage(conn, self._holds_for(conn, [failure]), [failure])[0]
            if found.processed:
                return IncidentResult("duplicate", "event already processed")
            with span("allocguard.detect", attributes, None) as detect:
                hold = found.hold
                if found.recorded is not None:  # a batch recorded it (settle_together) and read its snapshot
                    incident, recorded, snapshot = found.recorded
                else:
                    maybe = incident_from(failure, hold, lambda: found.booking)
                    if maybe is None:
                        detect.set("allocguard.outcome.status", "unresolvable")
                        return IncidentResult("unresolvable", _NO_WINDOW.format(failure.booking_id))
                    incident = maybe
                    # the incident recorded and its snapshot read in one round trip (a settled one's is not used)
                    recorded, snapshot = store.record_incident_and_snapshot(
                        conn, incident, failure, self.settings.mode.recorded
                    )
                incident_id, status, count, first_trace = recorded
                detect.set("allocguard.incident.id", str(incident_id))
                detect.set("allocguard.incident.event_count", count)
                detect.set("allocguard.incident.window_source", incident.window_source)
            links = [ids for ids in (first_trace, (hold.trace_id, hold.span_id) if hold else None) if ids and all(ids)]
            incident_attributes = {
                **attributes,
                "allocguard.incident.id": str(incident_id),
                "allocguard.incident.window": incident.window.to_postgres(),
                "allocguard.incident.table_ids": [str(t) for t in incident.table_ids],
                "allocguard.incident.window_source": incident.window_source,
                "allocguard.incident.event_count": count,
                "allocguard.restaurant.id": str(incident.restaurant_id),
                "allocguard.mode": self.settings.mode.value,
            }
            with span("allocguard.incident", incident_attributes, links) as incident_span:  # type: ignore[arg-type]
                if self._settled_already(status):
                    if self.settings.mode.acts:
                        store.mark_processed(conn, failure.event_id, incident_id, "duplicate")
                    incident_span.set("allocguard.outcome.status", "duplicate")
                    return _duplicate(incident, recorded)
                store.set_incident_trace(conn, incident_id, incident_span.trace_ids())
                result = self.remediate(conn, incident_id, incident, failure.event_id, incident_span, snapshot)
                result.event_count = count
                incident_span.set("allocguard.outcome.status", result.status)
                return result

    def _settled_already(self, status: str) -> bool:
        """An incident in this status takes no more work from a failure event: the event is one more of it."""
        return status in SETTLED or (status == "dry_run" and self.settings.mode is Mode.DRY_RUN)

    def settle_together(
        self, failures: list[tuple[FailureSeen, store.Triage]]
    ) -> list[tuple[IncidentResult | None, store.Triage]]:
        """Failures that need their incident (:meth:`triage` settled none of them; each of another booking), taken
        as far as they go without a plan that acts: their incidents recorded and snapshots read in one statement,
        then what needs nothing more — one more event of a settled incident, a plan that finds nothing to do — settled
        in one more statement, as :meth:`on_failure` would settle each (its status, outcome and processed marker).
        For each failure, in order: that outcome, else None (its own work takes it from there: :meth:`on_failure`
        given the returned triage, which carries the record and the snapshot); and the triage. Spans are not made
        here: the caller sends a failure whose trace is sampled the usual way."""
        incidents = [(self._incident_of(failure, found), failure) for failure, found in failures]
        out: list[tuple[IncidentResult | None, store.Triage]] = []
        settlements: list[store.Settlement] = []
        with self._connect() as conn:
            recorded = store.record_incidents_and_snapshots(conn, incidents, self.settings.mode.recorded)
            for (incident, failure), (_, found), (record, snapshot) in zip(incidents, failures, recorded, strict=True):
                result, settlement = self._without_acting(incident, failure, record, snapshot)
                if settlement is not None:
                    settlements.append(settlement)
                out.append((result, replace(found, recorded=(incident, record, snapshot))))
            store.settle_incidents(conn, settlements)
        for result, _ in out:
            if result is not None:
                self._note(result)
        return out

    @staticmethod
    def _incident_of(failure: FailureSeen, found: store.Triage) -> Incident:
        incident = incident_from(failure, found.hold, lambda: found.booking)
        if incident is None:
            raise ValueError(f"booking {failure.booking_id}: no window (triage settles such a failure)")
        return incident

    def _without_acting(
        self, incident: Incident, failure: FailureSeen, recorded: store.Recorded, snapshot: Snapshot
    ) -> tuple[IncidentResult | None, store.Settlement | None]:
        """:meth:`settle_together`'s judgement of one recorded incident: its outcome and what to write, when it
        settles without a plan that acts (as :meth:`_on_failure` and :meth:`_remediate` would settle it); else
        (None, None)."""
        s = self.settings
        incident_id, status, count, _ = recorded
        marked = failure.event_id if s.mode.acts else None
        if self._settled_already(status):
            marker = store.Settlement(incident_id, None, None, None, marked, "duplicate") if marked else None
            return _duplicate(incident, recorded), marker
        plan = make_plan(snapshot, s.grace)
        if plan.decision is not Decision.NOT_NEEDED or (plan.victim_assigned_by_allocguard and s.mode.acts):
            return None, None
        reason = plan.decision_reason
        result = IncidentResult(
            "not_needed", reason, incident_id, incident, plans=[plan], event_id=failure.event_id, event_count=count
        )
        outcome = self._outcome(result, "not_needed", reason)
        return result, store.Settlement(incident_id, "not_needed", reason, outcome, marked, "not_needed")

    def _note(self, result: IncidentResult) -> None:
        """An incident's outcome kept in memory when it is settled for good (only a mode that marks events
        processed answers from there)."""
        if result.incident is not None and result.incident_id is not None and self.settings.mode.acts:
            self.settled.note(result.incident, result.incident_id, result.settled_as or result.status, result.trace)

    def recheck(self, incident_id: UUID) -> IncidentResult | None:
        """Plan a waiting incident again, with no new platform event (its wake-up fell due and was claimed).
        None when it was settled meanwhile.

        A hold-conflict wait whose hold still stands is deferred again at once, in one statement (a thousand
        bookings backing off cost a statement each, not a full plan); anything else — the hold gone, the deferrals
        outlasted, another kind of wait — is planned again in full, and the executor re-proves every fact under
        its locks anyway."""
        attributes: dict[str, Any] = {
            "allocguard.incident.id": str(incident_id),
            "allocguard.incident.wakeup": True,
            "allocguard.mode": self.settings.mode.value,
        }
        retry = self.settings.retry
        with self._connect() as conn, self.hooks.span("allocguard.incident", attributes, None) as incident_span:
            deferred = store.defer_hold_conflict(
                conn,
                incident_id,
                _STILL_HELD,
                retry.hold_conflict_wait_s,
                retry.hold_conflict_max_wait_s,
                retry.max_deferral_s,
                while_held=True,
            )
            if deferred is not None:
                booking, due = deferred
                incident_span.set("allocguard.booking.id", str(booking))
                incident_span.set("allocguard.recheck", "still held")
                incident_span.set("allocguard.outcome.status", "open")
                return IncidentResult("open", _STILL_HELD, incident_id, recheck_at=due)
            loaded = store.load_incident(conn, incident_id)
            if loaded is None or loaded[1] != "open":
                incident_span.set("allocguard.outcome.status", "settled meanwhile")
                return None
            incident = loaded[0]
            incident_span.set("allocguard.booking.id", str(incident.booking_id))
            result = self.remediate(conn, incident_id, incident, None, incident_span)
            incident_span.set("allocguard.outcome.status", result.status)
            return result

    def plan(self, conn: Conn, incident: Incident) -> Plan:
        return make_plan(store.load_snapshot(conn, incident), self.settings.grace)

    def remediate(
        self,
        conn: Conn,
        incident_id: UUID,
        incident: Incident,
        event_id: UUID | None = None,
        incident_span: SpanHandle | None = None,
        snapshot: Snapshot | None = None,
    ) -> IncidentResult:
        """Plan (from ``snapshot`` first, when it was read already), act, retry, settle."""
        result = IncidentResult("open", "", incident_id, incident, event_id=event_id)
        result.trace = incident_span.trace_ids() if incident_span is not None else None
        try:
            return self._remediate(conn, result, incident_id, incident, snapshot)
        finally:
            self._write_evidence(result)

    def _write_evidence(self, result: IncidentResult) -> None:
        """The evidence files of the incident's committed prunes, once the victim's retry is done (off its path)."""
        if self.settings.artifacts_dir is not None:
            for prune in result.prunes:
                write_artifacts(prune, self.settings.artifacts_dir)

    def _remediate(
        self, conn: Conn, result: IncidentResult, incident_id: UUID, incident: Incident, snapshot: Snapshot | None
    ) -> IncidentResult:
        s = self.settings
        replans = s.replans
        while True:
            with self.hooks.span("allocguard.plan", {"allocguard.incident.id": str(incident_id)}, None) as span:
                if snapshot is None:
                    plan = self.plan(conn, incident)
                else:  # read in the incident's record statement (the detect span's)
                    plan = make_plan(snapshot, s.grace)
                    span.set("allocguard.plan.snapshot", "with_incident_record")
                    snapshot = None  # a re-plan reads the database again
                span.set("allocguard.plan.decision", plan.decision)
                span.set("allocguard.plan.reason", plan.decision_reason)
                for verdict, n in plan.counts().items():
                    span.set(f"allocguard.evidence.{verdict}", n)
                span.set("allocguard.plan.prune_ids", [str(i) for i in plan.prune_ids])
            result.plans.append(plan)
            if plan.decision is Decision.NOT_NEEDED and plan.victim_assigned_by_allocguard and s.mode.acts:
                # redelivered after allocguard's own assignment committed (a crash before the outcome was written)
                return self._settle(
                    conn, result, "resolved", "assigned by allocguard (its idempotency key), recorded on redelivery"
                )
            if plan.decision is Decision.NOT_NEEDED:
                return self._settle(conn, result, "not_needed", plan.decision_reason)
            if s.mode is Mode.DRY_RUN:
                result.prunes.append(self._apply(conn, plan, incident_id, result.trace))
                return self._settle(conn, result, "dry_run", plan.decision_reason)
            if plan.decision is Decision.MANUAL_REVIEW:
                return self._settle(conn, result, "manual_review", plan.decision_reason)
            if plan.decision is Decision.RELEASE_AND_RETRY and s.policy.stale_by_status is StalePolicy.OFF:
                return self._settle(
                    conn, result, "manual_review", f"{plan.decision_reason} — policy stale_by_status=off"
                )
            if plan.decision is Decision.WAIT:
                result.status, result.reason = "open", plan.decision_reason
                result.recheck_at = plan.recheck_at
                assert plan.recheck_at is not None
                store.schedule_recheck(conn, incident_id, plan.recheck_at, plan.decision_reason)
                return result
            if plan.decision.acts:
                why = approval_needed(plan, s.mode, s.policy, lambda r: store.remediations_last_hour(conn, r))
                if why is not None:
                    plan_id, _ = store.create_pending_plan(
                        conn, incident_id, plan, why, s.policy.plan_ttl, result.trace, s.requested_by
                    )
                    result.plan_id = plan_id
                    return self._settle(conn, result, "awaiting_approval", f"plan {plan_id} waits for a person: {why}")
                self._prune(conn, result, plan, incident_id)
            settled = self._retry(conn, result, incident, incident_id, plan)
            if settled is not None:
                return settled
            if replans > 0:
                replans -= 1
                continue
            return self._settle(conn, result, "manual_review", "a new blocker appeared after re-planning")

    def _prune(
        self, conn: Conn, result: IncidentResult, plan: Plan, incident_id: UUID, actor: str | None = None
    ) -> PruneResult:
        def pruned(cursor: psycopg.Cursor[Any], prune: PruneResult) -> None:
            # in the prune's own transaction: the incident says "pruned" exactly when the prune is committed
            store.set_incident_status(cursor, incident_id, "pruned", _pruned_reason(prune))

        with self.hooks.span(
            "allocguard.prune",
            {"allocguard.prune.planned": len(plan.prune_ids), "allocguard.release.planned": len(plan.release_ids)},
            None,
        ) as sp:
            prune = self._apply(conn, plan, incident_id, result.trace, actor, then=pruned)
            sp.set("allocguard.prune.status", prune.status)
            sp.set("allocguard.prune.pruned_ids", [str(i) for i in prune.pruned_ids])
            sp.set("allocguard.prune.skipped", len(prune.skipped))
            if prune.released_ids:
                sp.set("allocguard.release.allocation_ids", [str(i) for i in prune.released_ids])
        result.prunes.append(prune)
        if self.hooks.on_pruned is not None:
            self.hooks.on_pruned(prune)
        if prune.status == "already_done":
            store.set_incident_status(conn, incident_id, "pruned", _pruned_reason(prune))
        return prune

    def _retry(
        self, conn: Conn, result: IncidentResult, incident: Incident, incident_id: UUID, plan: Plan
    ) -> IncidentResult | None:
        """Retry auto-assign for the victim and settle the incident; None when a new blocker appeared (re-plan)."""
        s = self.settings
        request = AssignRequest(
            booking_id=incident.booking_id,
            table_ids=plan.target_tables,
            window=incident.window,
            require_adjacency=bool(incident.require_adjacency),
        )
        try:
            outcome = run_retry(
                self.strategy,
                request,
                s.retry,
                sleep=self._sleep,
                clock=self._clock,
                on_attempt=self.hooks.on_attempt,
                span=self.hooks.span,
            )
        except NewBlockerError:
            return None
        except HoldConflictError as exc:
            # another booking's hold covers the table: try again when it may have gone, from the delay queue
            # (a due time on the incident), not from a worker sleeping for it
            reason, retry = f"deferred: {exc}", s.retry
            deferred = store.defer_hold_conflict(
                conn,
                incident_id,
                reason,
                retry.hold_conflict_wait_s,
                retry.hold_conflict_max_wait_s,
                retry.max_deferral_s,
            )
            if deferred is None:
                return self._settle(conn, result, "manual_review", f"a hold conflict outlasted the deferrals: {exc}")
            result.status, result.reason, result.recheck_at = "open", reason, deferred[1]
            return result
        result.retry = outcome
        if outcome.status == "assigned":
            return self._settle(conn, result, "resolved", outcome.reason)
        if outcome.status == "not_needed" and s.mode.acts and store.assigned_by_allocguard(conn, incident.booking_id):
            # seated meanwhile by allocguard's own key: a try of this incident that did not live to record it
            return self._settle(
                conn, result, "resolved", f"assigned by allocguard (its idempotency key): {outcome.reason}"
            )
        if outcome.status == "not_needed":
            return self._settle(conn, result, "not_needed", outcome.reason)
        return self._settle(conn, result, "manual_review", outcome.reason)

    # ---- pending plans: a person decides --------------------------------------------------------

    def approve(self, plan_id: UUID, by: str, note: str | None = None) -> IncidentResult:
        """Execute a pending plan through the same executor, whose re-check on committed state decides: the
        proven part is pruned/released, or — the world changed — the plan is ``refused`` and nothing is touched.
        The decision (who, when, what came of it) is recorded with the plan. Then auto-assign is retried."""
        with self._connect() as conn:
            with conn.transaction():
                row = store.lock_plan(conn, plan_id)
                refusal = _undecidable(row, plan_id)
                if (
                    refusal is None
                    and row is not None
                    and row["requested_by"] == by
                    and not self.settings.policy.allow_self_approval
                ):
                    raise SelfApprovalError(
                        f"plan {plan_id} was requested by {by}: another person must approve it"
                        " (ALLOCGUARD_ALLOW_SELF_APPROVAL allows it)"
                    )
                if refusal is None and row is not None and row["expired"]:
                    store.decide_plan(conn, plan_id, "expired", by, "approval came after the plan expired")
                    store.set_incident_status(conn, row["incident_id"], "expired", "the pending plan expired")
                    refusal = f"plan {plan_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S%z}"
                if refusal is None:
                    assert row is not None
                    plan = Plan.model_validate(row["plan"])
                    incident_id = row["incident_id"]
                    result = IncidentResult("open", "", incident_id, plan.incident, plans=[plan])
                    trace = (row["trace_id"], row["span_id"]) if row["trace_id"] and row["span_id"] else None
                    result.trace = trace
                    prune = self._prune(
                        conn, result, plan, incident_id, actor=f"{self.settings.actor}, approved by {by}"
                    )
                    executed = prune.status in ("pruned", "already_done")
                    summary = {
                        "prune": prune.status,
                        "pruned": [str(i) for i in prune.pruned_ids],
                        "released": [[str(b), str(t)] for b, t in prune.released],
                        "skipped": prune.skipped,
                        "remediation_id": str(prune.remediation_id) if prune.remediation_id else None,
                    }
                    store.decide_plan(conn, plan_id, "executed" if executed else "refused", by, note, summary)
            if refusal is not None:
                raise PlanDecisionError(refusal)
            if not executed:
                reasons = "; ".join(sorted(set(prune.skipped.values()))) or prune.status
                return self._settle(conn, result, "manual_review", f"approved plan refused by the re-check: {reasons}")
            try:
                settled = self._retry(conn, result, plan.incident, incident_id, plan)
            finally:
                self._write_evidence(result)
            if settled is None:
                return self._settle(conn, result, "manual_review", "a new blocker appeared after the approved prune")
            return settled

    def reject(self, plan_id: UUID, by: str, note: str | None = None) -> None:
        """Decline a pending plan: nothing is touched; the incident is settled as ``rejected``."""
        with self._connect() as conn:
            with conn.transaction():
                row = store.lock_plan(conn, plan_id)
                refusal = _undecidable(row, plan_id)
                if refusal is None:
                    assert row is not None
                    store.decide_plan(conn, plan_id, "rejected", by, note)
                    store.set_incident_status(
                        conn, row["incident_id"], "rejected", f"plan rejected by {by}: {note or '-'}"
                    )
            if refusal is not None:
                raise PlanDecisionError(refusal)

    def _apply(
        self,
        conn: Conn,
        plan: Plan,
        incident_id: UUID,
        trace: tuple[str, str] | None,
        actor: str | None = None,
        then: Callable[[psycopg.Cursor[Any], PruneResult], None] | None = None,
    ) -> PruneResult:
        s = self.settings
        return apply_plan(
            conn,
            plan,
            mode=Mode.DRY_RUN if s.mode is Mode.DRY_RUN else Mode.AUTO,
            actor=actor or s.actor,
            grace=s.grace,
            incident_id=incident_id,
            artifacts_dir=s.artifacts_dir,
            trace=trace,
            then=then,
            # the evidence files wait until the victim's retry is done (written by _write_evidence)
            defer_artifacts=then is not None,
        )

    def _settle(self, conn: Conn, result: IncidentResult, status: str, reason: str) -> IncidentResult:
        with self.hooks.span(
            "allocguard.outcome", {"allocguard.outcome.status": status, "allocguard.outcome.reason": reason}, None
        ):
            return self._record_outcome(conn, result, status, reason)

    def _outcome(self, result: IncidentResult, status: str, reason: str) -> dict[str, Any]:
        """What the incident's ``outcome`` column says of how it was settled."""
        return {
            "status": status,
            "reason": reason,
            "decisions": [p.decision for p in result.plans],
            "pruned": [str(i) for p in result.prunes for i in p.pruned_ids],
            "attempts": [a.__dict__ for a in result.retry.attempts] if result.retry else [],
            "strategy": self.strategy.name,
            "mode": self.settings.mode.value,
            "plan_id": str(result.plan_id) if result.plan_id else None,
        }

    def _record_outcome(self, conn: Conn, result: IncidentResult, status: str, reason: str) -> IncidentResult:
        result.status, result.reason = status, reason
        assert result.incident_id is not None
        assert result.incident is not None
        outcome = self._outcome(result, status, reason)
        attempts = outcome["attempts"]
        acts = self.settings.mode.acts
        marked = result.event_id if acts else None
        if not (acts and status in _EVENT_TYPES):  # the status and the marker: one statement, no transaction block
            store.settle_incident(conn, result.incident_id, status, reason, outcome, marked)
            return result
        with conn.pipeline(), conn.transaction():  # one round trip: the status, the marker, the event, COMMIT
            store.set_incident_status(conn, result.incident_id, status, reason, outcome)
            if marked is not None:
                store.mark_processed(conn, marked, result.incident_id, status)
            incident = result.incident
            platform.announce(
                conn,
                "allocguard.remediation",
                _EVENT_TYPES[status],
                {"resolved": "info", "awaiting_approval": "warning"}.get(status, "error"),
                {
                    "incidentId": str(result.incident_id),
                    "reason": reason,
                    "tableIds": [str(t) for t in (result.plans[-1].target_tables if result.plans else ())],
                    "window": incident.window.to_postgres(),
                    "attempts": len(attempts),
                    "traceId": result.trace[0] if result.trace else None,
                    "planId": str(result.plan_id) if result.plan_id else None,
                },
                incident.restaurant_id,
                incident.booking_id,
            )
        return result


def _duplicate(incident: Incident, recorded: store.Recorded) -> IncidentResult:
    """A failure event of an incident settled already (``recorded``: as its record statement returned it)."""
    incident_id, status, count, first_trace = recorded
    return IncidentResult(
        "duplicate",
        f"incident already {status}",
        incident_id,
        incident,
        event_count=count,
        settled_as=status,
        trace=first_trace,
    )


_EVENT_TYPES = {
    "resolved": "allocguard.auto_assign.succeeded",
    "manual_review": "allocguard.manual_review",
    "awaiting_approval": "allocguard.plan_pending",
}


def _pruned_reason(prune: PruneResult) -> str:
    done = f"pruned {len(prune.pruned_ids)} orphan(s)"
    if prune.released:
        done += f", released {len(prune.released)} stale-by-status assignment(s)"
    return done


def _undecidable(row: dict[str, Any] | None, plan_id: UUID) -> str | None:
    if row is None:
        return f"no plan {plan_id}"
    if row["status"] != "pending":
        return f"plan {plan_id} is already {row['status']} (by {row['decided_by']} at {row['decided_at']})"
    return None
