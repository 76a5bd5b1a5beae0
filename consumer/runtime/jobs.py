"""The bodies of the runtime's work items, each riding out its dependencies, each outcome recorded by
:class:`~consumer.runtime.outcomes.Outcomes`: a signal handled, a change checked by prevention, a waiting incident
planned again."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from uuid import UUID

from consumer.config import RuntimeSettings
from consumer.runtime.outcomes import Outcomes
from consumer.runtime.rideout import RideOut
from consumer.telemetry import Telemetry, traced_send
from handlers.detect import FailureSeen, HoldNote
from handlers.pipeline import Connect, Hooks, IncidentResult, RemediationSettings, Remediator
from handlers.prevent import Flagged, Guard
from handlers.retry import AssignStrategy, Attempt, HttpAssign, RetryPolicy, SqlAssign
from handlers.store import Triage
from schemas.records import Mode
from schemas.rows import ObservabilityEvent

log = logging.getLogger("allocguard.runtime")


class Jobs:
    def __init__(self, remediator: Remediator, guard: Guard | None, ride: RideOut, outcomes: Outcomes) -> None:
        self._remediator = remediator
        self._guard = guard
        self._ride = ride
        #: what is recorded about each outcome (the batch thread records its own there too)
        self.outcomes = outcomes

    def signal(self, found: HoldNote | FailureSeen, key: str, triaged: Triage | None = None) -> None:
        """A signal the consumer classified: a hold remembered, a failure's incident handled (``triaged``: its
        first steps, read by a batch)."""
        started = time.monotonic()

        def handle() -> IncidentResult | None:
            # what a batch read (and recorded) is for the first try only: a try again after contention or an
            # outage reads everything afresh — an earlier try may have pruned and assigned before it failed
            nonlocal triaged
            first, triaged = triaged, None
            return self._remediator.handle(found, first)

        result = self._ride.run(key, handle)
        self.outcomes.handled("failure" if result else "hold", time.monotonic() - started)
        if result is not None:
            assert isinstance(found, FailureSeen)
            self.outcomes.incident(key, result, found.created_at)

    def event(self, event: ObservabilityEvent, key: str) -> None:
        """An event re-read from the database (a backfill): classified here, then handled as a signal."""
        started = time.monotonic()
        result = self._ride.run(key, lambda: self._remediator.observe(event))
        self.outcomes.handled("failure" if result else "hold", time.monotonic() - started)
        if result is not None:
            self.outcomes.incident(key, result, event.created_at)

    def recheck(self, incident_id: UUID, key: str) -> None:
        """A waiting incident whose wake-up fell due: planned again."""
        result = self._ride.run(key, lambda: self._remediator.recheck(incident_id))
        if result is not None:
            self.outcomes.incident(key, result)

    def prevent(self, booking: UUID | None, cause: str, key: str) -> None:
        """Prevention for one change: check the booking's allocations (or sweep, when the change named none)."""
        guard = self._guard
        assert guard is not None

        def check() -> list[Flagged]:
            return guard.check_booking(booking, cause) if booking is not None else guard.sweep(f"{cause}, swept")

        self.outcomes.prevention(cause, self._ride.run(key, check))


def build_remediator(
    settings: RuntimeSettings, connect: Connect, telemetry: Telemetry, *, sleep: Callable[[float], None]
) -> Remediator:
    """The remediator as the runtime runs it: the assign strategy of the settings, spans, crash points."""
    strategy: AssignStrategy = (
        HttpAssign(
            settings.assign_endpoint.get_secret_value(),
            connect,
            headers=settings.assign_header_values(),
            send=traced_send,
        )
        if settings.strategy == "http" and settings.assign_endpoint is not None
        else SqlAssign(connect)
    )
    hooks = _failpoints()
    hooks.span = telemetry.span
    return Remediator(
        connect,
        strategy,
        RemediationSettings(
            mode=Mode(settings.mode),
            grace=timedelta(seconds=settings.grace_s),
            artifacts_dir=settings.artifacts_dir,
            # hold conflicts wait in the delay queue (a due time, the wake-up thread), not in a worker
            retry=RetryPolicy(defer_hold_conflicts=True),
            policy=settings.policy(),
        ),
        hooks=hooks,
        sleep=sleep,
    )


def _failpoints() -> Hooks:
    """Crash points for the kill -9 tests (SIGKILL, deterministic): ``ALLOCGUARD_FAILPOINT=after_prune`` right
    after a prune commits; ``after_assign`` right after the retry's assignment commits, before the incident's
    final state and the processed marker are written."""
    point = os.environ.get("ALLOCGUARD_FAILPOINT")

    def crash() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def attempted(attempt: Attempt) -> None:
        log.info("auto-assign attempt %d (waited %.1fs): %s", attempt.number, attempt.waited_s, attempt.outcome)
        if point == "after_assign" and attempt.outcome == "assigned":
            crash()

    if point == "after_prune":
        return Hooks(on_attempt=attempted, on_pruned=lambda result: crash() if result.status == "pruned" else None)
    return Hooks(on_attempt=attempted)
