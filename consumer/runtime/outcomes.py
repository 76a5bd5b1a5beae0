"""What is recorded about an outcome — the metrics and the log line — kept out of the work itself: the work bodies
(consumer/runtime/jobs.py) and the batch thread hand their results here."""

from __future__ import annotations

import logging
from collections import Counter
from datetime import UTC, datetime

from consumer.telemetry import Metrics
from handlers.pipeline import IncidentResult
from handlers.prevent import Flagged
from schemas.records import FlagStatus

log = logging.getLogger("allocguard.runtime")

#: outcomes that settle an incident (their time from the failure is the resolution time)
_SETTLING = ("resolved", "not_needed", "manual_review")


class Outcomes:
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def handled(self, signal: str, seconds: float, count: int = 1) -> None:
        """``count`` signals handled by one piece of work (a signal's own, or a batch's round trip) that took
        ``seconds``: one histogram observation per piece of work — an OpenTelemetry record costs ≈ 10 µs, the
        price of a whole hold announcement on the fast path — and the signals counted."""
        metrics = self._metrics
        attributes = {"signal": signal}
        metrics.handling.record(seconds, attributes)
        metrics.signals.add(count, attributes)

    def remembered(self, count: int) -> None:
        """Hold announcements kept in memory with no work of their own: counted (as the poll loop counts its own),
        no handling time."""
        self._metrics.signals.add(count, {"signal": "hold"})

    def incident(self, key: str, result: IncidentResult, event_at: datetime | None = None) -> None:
        """A failure's (or a wake-up's) outcome: counted, logged; with its event's time (a failure event's, not a
        wake-up's), what it did in detail and how long the failure waited."""
        metrics = self._metrics
        metrics.incidents.add(1, {"status": result.status})
        if event_at is not None:
            pruned = {i for prune in result.prunes for i in prune.pruned_ids}
            if result.plans:
                for evidence in result.plans[0].evidence:
                    action = (
                        "pruned"
                        if evidence.allocation_id in pruned
                        else ("reported" if evidence.verdict.value == "stale_by_status" else "kept")
                    )
                    metrics.allocations.add(1, {"verdict": evidence.verdict.value, "action": action})
            for attempt in result.retry.attempts if result.retry else []:
                metrics.attempts.add(1, {"outcome": attempt.outcome})
            if result.status in _SETTLING:
                waited = (datetime.now(UTC) - event_at).total_seconds()
                metrics.resolution.record(max(waited, 0.0), {"status": result.status})
        self.log(key, result)

    def settled_together(self, outcomes: Counter[str]) -> None:
        """Failures the batch settled at once (duplicates, no window): neither settles an incident, so no
        resolution time to record."""
        for status, count in outcomes.items():
            self._metrics.incidents.add(count, {"status": status})

    def log(self, key: str, result: IncidentResult) -> None:
        """One INFO line per incident outcome: a failure event of an incident already handled (a platform attempt
        emits 12 or 13 of them) is counted, and logged at DEBUG only."""
        pruned = [str(i) for prune in result.prunes for i in prune.pruned_ids]
        due = f"; planned again at {result.recheck_at.isoformat()}" if result.recheck_at else ""
        (log.debug if result.status == "duplicate" else log.info)(
            "booking %s: %s (%s)%s%s",
            key,
            result.status,
            result.reason,
            f"; pruned orphan allocation(s) {', '.join(pruned)}" if pruned else "",
            due,
        )

    def prevention(self, cause: str, flags: list[Flagged]) -> None:
        for flag in flags:
            acted = flag.status in (FlagStatus.PRUNED, FlagStatus.RELEASED)
            if flag.new or acted:
                self._metrics.prevention.add(1, {"verdict": flag.evidence.verdict.value, "status": flag.status})
            if flag.status is not FlagStatus.CLEARED and (flag.new or acted):
                log.info(
                    "prevention (%s): allocation %s of booking %s on table %s is %s: %s%s",
                    cause,
                    flag.evidence.allocation_id,
                    flag.evidence.booking_id,
                    flag.evidence.table_id,
                    flag.evidence.verdict.value,
                    flag.status,
                    f" (due {flag.due_at.isoformat()})" if flag.due_at else "",
                )
