"""The batch thread's work: under a backlog, a batch of failures (each booking's first) is handled together — the
holds they recall written and their first steps read in one round trip, then their incidents recorded and their
snapshots read in one more, and what needs no plan that acts (one more event of a settled incident, nothing to do)
settled in a third; everything else goes the usual way (its own work item, given what was read and recorded). A
booking's later signals follow its first: answered here in memory while they can be (a hold remembered, one more
event of an incident settled for good folded), else behind its work item or in the next batch. (Hold announcements
come here only behind a queued failure of their booking, to keep its order; the rest are kept in memory on the poll
loop, handlers/holds.py.) A failure whose trace is sampled goes the usual way after its first steps, so that its
trace shows every step as its own span. Runs on the batch thread of
:class:`~consumer.runtime.scheduler.SignalBatches`."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from confluent_kafka import Message
from opentelemetry import trace
from opentelemetry.trace import Span

from consumer.runtime.jobs import Jobs
from consumer.runtime.routing import Signal
from consumer.runtime.scheduler import KeyedScheduler
from consumer.runtime.work import BatchDone
from consumer.telemetry import Metrics, Telemetry
from handlers.detect import FailureSeen, HoldNote
from handlers.pipeline import Remediator, failure_attributes
from handlers.store import Triage

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
        answer: Callable[[FailureSeen, str, Message, Span], bool],
        done: Callable[[BatchDone], None],
    ) -> None:
        self._remediator = remediator
        self._scheduler = scheduler
        self._telemetry = telemetry
        self._metrics = metrics
        self._outcomes = jobs.outcomes
        #: a signal as its own work item (the usual way)
        self._submit = submit
        #: one more failure event of an incident settled for good, answered in memory (the poll loop's own way)
        self._answer_failure = answer
        #: hands settled events back to the loop, which completes their offsets
        self._done = done
        #: the batch's messages already placed (completed, folded or submitted)
        self._placed: set[int] = set()
        #: the batch's hold announcements remembered here (done with the batch)
        self._remembered: list[Message] = []

    def handle(self, batch: list[Item]) -> list[Item]:
        """A booking whose earlier work went to a worker meanwhile goes behind it; a signal answered in memory is
        done here; each other booking's first failure is handled with the others'. A booking's later signals wait
        for that: behind its failure's work item when it got one, else (the batch settled it) answered here while
        they can be, and from the first that cannot on held back — returned, for a batch of their own."""
        failures: list[Item] = []
        later: list[Item] = []
        read: set[str] = set()  # bookings whose first failure this batch reads
        self._placed.clear()
        scheduler = self._scheduler
        try:
            for item in batch:
                key = item[0].key
                if key in read:
                    later.append(item)
                elif scheduler.has(key):
                    self._send_on(*item)
                elif not self._answer(*item):
                    failures.append(item)
                    read.add(key)
            self.flush(failures)
            kept: list[Item] = []
            held: set[str] = set()
            for item in later:
                key = item[0].key
                if key in held:
                    kept.append(item)
                elif scheduler.has(key):
                    self._send_on(*item)
                elif not self._answer(*item):
                    held.add(key)  # and every later signal of the booking, in its order
                    kept.append(item)
            return kept
        except Exception:  # a bug, not the database (that is handled inside): what is not placed goes the usual way
            log.exception("handling %d signal(s) together failed: each goes the usual way", len(batch))
            for item in batch:
                if id(item[1]) not in self._placed:
                    self._send_on(*item)
            return []
        finally:
            self._remembered_done()

    def _answer(self, routed: Signal, message: Message, span: Span) -> bool:
        """A signal of a booking with nothing in flight, answered in memory as the poll loop answers a free
        booking's: a hold announcement remembered (done with the batch), one more failure event of an incident
        settled for good folded into it. False: it needs the database."""
        found = routed.found
        if isinstance(found, HoldNote):  # (the poll loop's twin is written out on its hot path)
            if span.is_recording():
                with trace.use_span(span, end_on_exit=False):  # its remembering is a span of its own
                    self._remediator.remember(found)
            else:
                self._remediator.memory.remember(found)
            self._telemetry.end(span)
            self._placed.add(id(message))
            self._remembered.append(message)
            return True
        if not self._answer_failure(found, routed.key, message, span):
            return False
        self._placed.add(id(message))
        return True

    def _remembered_done(self) -> None:
        remembered = self._remembered
        if remembered:
            self._outcomes.remembered(len(remembered))
            self._done_later(remembered)
            self._remembered = []

    def flush(self, failures: list[Item]) -> None:
        """A batch's failures' first steps read in one round trip (processed already? the hold they recall —
        written first, in the same round trip — and the booking's window). What that settles — a duplicate, a
        failure with no window to work with — is settled here, as the whole path would settle it, without a work
        item or a statement of its own; every other failure goes the usual way (its own work item, which reads
        those steps again inside its own work). If the round trip fails for any reason, every failure of the batch
        goes the usual way — its own work item, which rides out an infrastructure failure without a verdict — so
        nothing is lost and nothing is dead-lettered."""
        if not failures:
            return
        started = time.monotonic()
        telemetry = self._telemetry
        try:
            verdicts = self._remediator.triage([_failure(routed) for routed, _, _ in failures])
        except Exception as exc:
            log.info("%d signal(s) not handled together (%s): one at a time", len(failures), exc)
            for item in failures:
                self._send_on(*item)
            return
        took = time.monotonic() - started
        outcomes = self._outcomes
        done: list[Message] = []
        settled: Counter[str] = Counter()
        whole: list[tuple[Item, Triage]] = []  # failures that need their incident
        for (routed, message, span), (result, found) in zip(failures, verdicts, strict=True):
            if result is None:
                routed.triaged = found  # its work item is given what was read here, not read again
                if span.is_recording():
                    self._send_on(routed, message, span)  # each of its steps a span of its own
                else:
                    whole.append(((routed, message, span), found))
                continue
            if telemetry.tracing and result.status != "duplicate":
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
        if whole:
            self._incidents(whole)

    def _incidents(self, whole: list[tuple[Item, Triage]]) -> None:
        """Failures whose first steps found an incident to record: recorded together, and what needs no plan that
        acts settled together (:meth:`Remediator.settle_together`); the rest go the usual way, their work given
        the record. If either statement fails, each goes the usual way with its first steps only (its own work
        records it again: an event is counted into its incident once)."""
        started = time.monotonic()
        try:
            results = self._remediator.settle_together([(_failure(item[0]), found) for item, found in whole])
        except Exception as exc:
            log.info("%d incident(s) not recorded together (%s): one at a time", len(whole), exc)
            for item, _ in whole:
                self._send_on(*item)
            return
        took = time.monotonic() - started
        done: list[Message] = []
        for ((routed, message, span), _), (result, found) in zip(whole, results, strict=True):
            if result is None:
                routed.triaged = found  # with its record and snapshot
                self._send_on(routed, message, span)
                continue
            self._telemetry.end(span)
            self._outcomes.incident(routed.key, result, _failure(routed).created_at)
            done.append(message)
        self._done_later(done)
        if done:
            self._outcomes.handled("failure", took, len(done))

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
