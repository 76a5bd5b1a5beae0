"""The batch thread's work: under a backlog, a batch of signals (distinct bookings) is handled together — its hold
announcements written and its failures' first steps read in one round trip; what that settles is settled here,
everything else goes the usual way (its own work item). Runs on the batch thread of
:class:`~consumer.runtime.scheduler.SignalBatches`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Message
from opentelemetry.trace import Span

from consumer.runtime.jobs import Jobs
from consumer.runtime.routing import Signal
from consumer.runtime.scheduler import KeyedScheduler
from consumer.runtime.work import BatchDone
from consumer.telemetry import Metrics, Telemetry, span_ids
from handlers.detect import FailureSeen, HoldNote
from handlers.pipeline import Remediator, failure_attributes, hold_attributes, traced

log = logging.getLogger("allocguard.runtime")

Item = tuple[Signal, Message, Span]


class BatchHandler:
    def __init__(
        self,
        remediator: Remediator,
        scheduler: KeyedScheduler,
        telemetry: Telemetry,
        metrics: Metrics,
        jobs: Jobs,
        *,
        submit: Callable[[Signal, Message, Span], None],
        done: Callable[[BatchDone], None],
    ) -> None:
        self._remediator = remediator
        self._scheduler = scheduler
        self._telemetry = telemetry
        self._metrics = metrics
        self._outcomes = jobs.outcomes
        #: a signal as its own work item (the usual way)
        self._submit = submit
        #: hands settled events back to the loop, which completes their offsets
        self._done = done
        #: the batch's messages already placed (completed or submitted)
        self._placed: set[int] = set()

    def handle(self, batch: list[Item]) -> None:
        """A booking whose earlier failure went to a worker meanwhile goes behind it; the rest are handled
        together."""
        holds: list[Item] = []
        failures: list[Item] = []
        self._placed.clear()
        try:
            for item in batch:
                routed = item[0]
                if self._scheduler.has(routed.key):
                    self._send_on(*item)
                elif isinstance(routed.found, HoldNote):
                    holds.append(item)
                else:
                    failures.append(item)
            self.flush(holds, failures)
        except Exception:  # a bug, not the database (that is handled inside): what is not placed goes the usual way
            log.exception("handling %d signal(s) together failed: each goes the usual way", len(batch))
            for item in batch:
                if id(item[1]) not in self._placed:
                    self._send_on(*item)

    def flush(self, holds: list[Item], failures: list[Item]) -> None:
        """A batch's hold announcements are written, then its failures' first steps read (processed already? the
        hold they name — perhaps one just written — and the booking's window): two statements, one round trip.
        What that settles — a duplicate, a failure with no window to work with — is settled here, as the whole
        path would settle it, without a work item or a statement of its own; every other failure goes the usual
        way (its own work item, which reads those steps again inside its own work). If the round trip fails for
        any reason, every signal of the batch goes the usual way — its own work item, which rides out an
        infrastructure failure without a verdict — so nothing is lost and nothing is dead-lettered."""
        started = time.monotonic()
        telemetry = self._telemetry
        tracing = telemetry.tracing
        children: list[Span | None] = []
        remembered: list[HoldNote] = []
        for routed, _, span in holds:
            hold = routed.found
            assert isinstance(hold, HoldNote)
            if tracing:
                child = telemetry.child(span, "allocguard.hold.remembered", hold_attributes(hold))
                children.append(child)
                hold = traced(hold, span_ids(child))
            remembered.append(hold)
        try:
            verdicts = self._remediator.triage([_failure(routed) for routed, _, _ in failures], remembered)
        except Exception as exc:
            log.info("%d signal(s) not handled together (%s): one at a time", len(holds) + len(failures), exc)
            for ended in children:
                if ended is not None:
                    ended.end()
            for item in (*holds, *failures):
                self._send_on(*item)
            return
        took = time.monotonic() - started
        outcomes = self._outcomes
        for ended in children:
            if ended is not None:
                ended.end()
        if tracing:
            for _, _, span in holds:
                telemetry.end(span)
        if holds:
            outcomes.handled("hold", took, len(holds))
        done = [message for _, message, _ in holds]
        settled: Counter[str] = Counter()
        for (routed, message, span), result in zip(failures, verdicts, strict=True):
            if result is None:
                self._send_on(routed, message, span)
                continue
            if tracing and result.status != "duplicate":
                detect = telemetry.child(span, "allocguard.detect", failure_attributes(_failure(routed)))
                if detect is not None:
                    detect.set_attribute("allocguard.outcome.status", result.status)
                    detect.end()
            telemetry.end(span)
            settled[result.status] += 1
            outcomes.log(routed.key, result)
            done.append(message)
        self._done_later(done)
        if settled:
            outcomes.handled("failure", took, sum(settled.values()))
        outcomes.settled_together(settled)

    def _send_on(self, routed: Signal, message: Message, span: Span) -> None:
        """This signal goes the usual way (its own work item)."""
        self._placed.add(id(message))
        self._submit(routed, message, span)

    def _done_later(self, messages: list[Message]) -> None:
        """These events are done; the loop completes their offsets (the tracker is the loop's alone) — one
        hand-over for all of them."""
        if not messages:
            return
        self._placed.update(id(m) for m in messages)
        self._done(BatchDone([(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in messages]))


def _failure(routed: Signal) -> FailureSeen:
    found = routed.found
    assert isinstance(found, FailureSeen)
    return found
