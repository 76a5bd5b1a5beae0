"""From a poll batch to work: the byte test rules most messages out unread; a candidate is decoded and classified
once (consumer/runtime/routing.py); a signal becomes its booking's work item — or, under a backlog, joins the batch
thread's next batch (consumer/runtime/batching.py); a change prevention watches becomes a check; a message that
cannot be read goes to the dead-letter topic. Runs on the poll loop's thread."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import cast
from uuid import UUID

from confluent_kafka import KafkaError, Message
from opentelemetry import trace
from opentelemetry.trace import Span

from consumer.config import RuntimeSettings
from consumer.runtime.batching import BatchHandler, Item
from consumer.runtime.clients import header_list
from consumer.runtime.deadletter import DeadLetters
from consumer.runtime.folds import Fold, Folds
from consumer.runtime.health import kafka_log
from consumer.runtime.jobs import Jobs
from consumer.runtime.partitions import Partitions
from consumer.runtime.routing import (
    FAILURE,
    HOLD,
    DeadLetter,
    Relevance,
    Signal,
    Skip,
    Watched,
    failure_signal,
    hold_signal,
    plain_failure,
    plain_hold,
    route_decoded,
)
from consumer.runtime.scheduler import KeyedScheduler, SignalBatches
from consumer.runtime.work import BatchDone, Event, FatalRuntimeError
from consumer.telemetry import Telemetry
from handlers.detect import FailureSeen, HoldNote
from handlers.pipeline import Remediator
from handlers.prevent import AssignmentIndex
from handlers.settled import Settled

#: the scheduler key of a change that named no booking (answered by a sweep, one at a time)
SWEEP_KEY = "prevention-sweep"


class Dispatcher:
    def __init__(
        self,
        settings: RuntimeSettings,
        *,
        remediator: Remediator,
        jobs: Jobs,
        folds: Callable[[Callable[[Fold], None]], Folds],
        scheduler: KeyedScheduler,
        partitions: Partitions,
        dead_letters: DeadLetters,
        assignments: AssignmentIndex,
        telemetry: Telemetry,
        completed: Callable[[BatchDone], None],
        stop: threading.Event,
    ) -> None:
        self.settings = settings
        self._rules = rules = remediator.rules
        self._jobs = jobs
        self._scheduler = scheduler
        self._partitions = partitions
        self._tracker = partitions.tracker
        self._dead_letters = dead_letters
        self._assignments = assignments
        self._telemetry = telemetry
        self._metrics = metrics = partitions.metrics
        self._health = partitions.health
        self._stats = partitions.stats
        self._stop = stop
        self._relevant = Relevance(rules, watch=settings.prevention)
        self._remediator = remediator
        #: hold announcements remembered in the current poll batch (counted once per batch)
        self._held = 0
        #: candidates of the current poll batch done on the loop (no offset tracked: the read position covers them)
        self._done_here = 0
        #: candidates decoded in the current poll batch, by (topic, op): the events counter moves once per batch
        self._routed: Counter[tuple[str, str]] = Counter()
        #: whether the current poll batch is a backlog's (signals batched) or a caught-up stream's (sent on at once)
        self._batching = False
        #: when the last poll batch arrived (the last-event gauge)
        self.last_event_at: float | None = None
        self.batch = BatchHandler(
            remediator, scheduler, telemetry, metrics, jobs, submit=self.submit, answer=self.answer, done=completed
        )
        #: hold announcements and failures whose bookings had nothing in flight: handled many at a time
        self.batches: SignalBatches[Item] = SignalBatches(
            self.batch.handle, lambda item: item[0].key, linger_s=settings.batch_linger_s
        )
        #: failure events of incidents settled for good, answered in memory and written many at a time
        self.folds = folds(self._fold_usual)

    def take(self, messages: list[Message]) -> None:
        """One poll batch. Most CDC events cannot be signals: the byte test rules them out unread, they are
        counted per batch (not per message), and each partition's read position moves once per batch. Only
        candidates pay for a decode, and only signals and dead letters for a span and offset bookkeeping."""
        self.last_event_at = time.time()
        batch = self._relevant.select(messages)
        # a backlog (a full poll) is worth batching; a caught-up stream sends each signal on at once (latency)
        self._batching = len(messages) >= self.settings.batch_backlog
        for message in batch.errors:
            error = message.error()
            assert error is not None
            if error.code() == KafkaError._PARTITION_EOF:
                continue
            if error.code() == KafkaError._AUTO_OFFSET_RESET:
                # the position is out of the log's range (retention ran past it mid-run): fetching has stopped
                self._partitions.gaps.out_of_range(
                    message.topic() or "", message.partition() or 0, message.offset() or -1
                )
                continue
            if error.fatal():
                raise FatalRuntimeError(f"fatal Kafka error: {error}")
            kafka_log.warning("kafka: %s", error)
        first = messages[0]
        if first.error() is None:  # one mark per poll batch: a time at or before what this partition handled
            _, timestamp_ms = first.timestamp()
            if timestamp_ms > 0:
                self._partitions.mark(first.topic() or "", first.partition() or 0, first.offset() or 0, timestamp_ms)
        routed = self._routed
        tracing = self._telemetry.tracing  # once per poll batch: it looks at the global provider
        for message in batch.candidates:
            self._route(message, tracing)
        if routed:  # candidates are counted per batch too, by topic and op
            for (topic, op), count in routed.items():
                self._metrics.events.add(count, {"topic": topic, "op": op})
            routed.clear()
        if self._held:
            self._metrics.signals.add(self._held, {"signal": "hold"})
            self._held = 0
        skipped, done_here = batch.skipped, self._done_here
        self._done_here = 0
        if (skipped or done_here) and self._health.assigned:
            self._partitions.read_past_skipped()
        done = sum(skipped.values()) + done_here
        if done:
            stats = self._stats
            if not stats["first_at"]:
                stats["first_at"] = time.monotonic()
            stats["completed"] += done
            stats["last_done_at"] = time.monotonic()
            for topic, count in skipped.items():
                self._metrics.events.add(count, {"topic": topic, "op": "prefiltered"})

    def _route(self, message: Message, tracing: bool) -> None:
        """A candidate: decoded and classified; a span only for what becomes a signal or a dead letter."""
        topic = message.topic() or ""
        if not self._stats["first_at"]:
            self._stats["first_at"] = time.monotonic()
        value = message.value()
        # route(), its first case (one event in ten) read before partition and offset, which a free hold never needs
        signal_topic = self._relevant.signal_topic(topic)
        read = plain_hold(signal_topic, message.key(), value, self._rules)
        if read is not None and self._free(cast(str, read[1].booking_id)):  # read only with a booking id
            self._hold_here(message, topic, *read, tracing)
            return
        partition, offset = message.partition() or 0, message.offset() or 0
        failure = plain_failure(signal_topic, message.key(), value, self._rules) if read is None else None
        routed = (
            hold_signal(*read)
            if read is not None
            else failure_signal(*failure)
            if failure is not None
            else route_decoded(topic, partition, offset, message.key(), value, self._rules)
        )
        if isinstance(routed, Skip):
            # done here and now, as a message the byte test skipped: the batch's read position covers it
            self._routed[(topic, routed.op)] += 1
            self._done_here += 1
            return
        if isinstance(routed, Signal) and isinstance(routed.found, HoldNote) and self._free(routed.key):
            self._hold_here(message, topic, routed.op, routed.found, tracing)
            return
        self._tracker.started(topic, partition, offset)  # work that ends later holds its partition's commit
        telemetry = self._telemetry
        span = self._consumer_span(message, topic, partition, offset) if tracing else trace.INVALID_SPAN
        if isinstance(routed, DeadLetter):
            self._dead_letters.send(message, routed.error, span)
            telemetry.end(span, routed.error)
            return
        self._routed[(topic, routed.op)] += 1
        if tracing:
            span.set_attribute("allocguard.cdc.op", routed.op)
        if isinstance(routed, Watched):
            self._watch(routed, message, span)
            return
        if tracing:
            span.set_attribute("allocguard.signal", routed.kind)
        key = routed.key
        if isinstance(routed.found, FailureSeen) and self._free(key) and self.answer(routed.found, key, message, span):
            return
        is_failure = isinstance(routed.found, FailureSeen)
        batches = self.batches
        # a failure under a backlog is batched; any signal of a booking queued there goes behind it (its order)
        if (is_failure or batches.has(key)) and batches.offer(
            key, (routed, message, span), is_failure and self._batching and not self._scheduler.has(key)
        ):
            return
        # caught up (no backlog), or this booking has work in flight (it waits behind it): its own work item
        self.submit(routed, message, span)

    def _hold_here(self, message: Message, topic: str, op: str, note: HoldNote, tracing: bool) -> None:
        """A hold announcement of a booking with nothing in flight: remembered now, in the stream's order, and done
        here (no offset tracked: the batch's read position covers it)."""
        if tracing:
            span = self._consumer_span(message, topic, message.partition() or 0, message.offset() or 0)
            span.set_attribute("allocguard.cdc.op", op)
            span.set_attribute("allocguard.signal", HOLD)
            with trace.use_span(span, end_on_exit=True):  # the remembering is a span of its own
                self._remediator.remember(note)
        else:
            self._remediator.memory.remember(note)
        self._routed[(topic, op)] += 1
        self._held += 1
        self._done_here += 1

    def answer(self, failure: FailureSeen, key: str, message: Message, span: Span) -> bool:
        """One more event of an incident settled for good, of a booking with nothing in flight: answered now, in
        memory, and written with others by the folds (which complete its offset); its span ends. False: only the
        database can tell."""
        known = self._remediator.known_incident(failure)
        if known is None:
            return False
        self._fold(failure, known, key, message, span)
        self._telemetry.end(span)
        return True

    def _free(self, key: str) -> bool:
        """Nothing of this booking is in flight: neither a work item nor a queued batch."""
        return not self._scheduler.has(key) and not self.batches.has(key)

    def _consumer_span(self, message: Message, topic: str, partition: int, offset: int) -> Span:
        return self._telemetry.consumer_span(
            topic, partition, offset, message.key(), header_list(message), self.settings.group_id
        )

    def _watch(self, routed: Watched, message: Message, span: Span) -> None:
        # resolved here, in the loop's order: a key-only assignment delete is named by the rows seen before it
        booking: UUID | None = self._assignments.resolve(routed.watch)
        cause = routed.watch.cause
        span.set_attribute("allocguard.signal", "Watch")
        span.set_attribute("allocguard.prevention.cause", cause)
        if booking is not None:
            span.set_attribute("allocguard.booking.id", str(booking))
        key = str(booking) if booking is not None else SWEEP_KEY
        if not self.batches.wait_clear(key, self._stop):
            self._telemetry.end(span)  # stopping: left in flight, uncommitted, for the next owner
            return
        jobs = self._jobs

        def prevent_in_span() -> None:
            with trace.use_span(span, end_on_exit=False):
                jobs.prevent(booking, cause, key)

        self._scheduler.submit(_event(message, key, prevent_in_span, span))

    def submit(self, routed: Signal, message: Message, span: Span, *, memory: bool = True) -> None:
        """A signal as its booking's own work item. A failure that turns out, when its turn comes, to be one more
        event of an incident settled for good (the booking's earlier work settled it) is answered in memory: its
        offset completes when the folds write it, not when the work ends."""
        found, key, jobs = routed.found, routed.key, self._jobs
        event = _event(message, key, _nothing, span)
        known = self._remediator.known_incident if memory and isinstance(found, FailureSeen) else None

        def run_in_span() -> None:
            with trace.use_span(span, end_on_exit=False):
                if known is not None:
                    assert isinstance(found, FailureSeen)
                    settled = known(found)
                    if settled is not None:
                        event.handed_over = True
                        self._fold(found, settled, key, message, span)
                        return
                jobs.signal(found, key, routed.triaged)

        event.run = run_in_span
        self._scheduler.submit(event)

    def _fold(self, failure: FailureSeen, known: Settled, key: str, message: Message, span: Span) -> None:
        """An event answered in memory: its span (when sampled) and its write, with others, by the folds."""
        if span.is_recording():
            with trace.use_span(span, end_on_exit=False):
                self._remediator.answered(failure, known)
        where = (message.topic() or "", message.partition() or 0, message.offset() or 0)
        self.folds.add(Fold(failure, known.incident_id, key, *where, message))

    def _fold_usual(self, fold: Fold) -> None:
        """An answered event the folds could not write: its own work item, on the database path."""
        routed = Signal("c", None, fold.key, FAILURE, fold.failure)
        self.submit(routed, fold.message, trace.INVALID_SPAN, memory=False)


def _nothing() -> None:
    return None


def _event(message: Message, key: str, run: Callable[[], None], span: Span) -> Event:
    return Event(
        topic=message.topic() or "",
        partition=message.partition() or 0,
        offset=message.offset() or 0,
        key=key,
        run=run,
        message=message,
        span=span,
    )
