"""Retention gaps as the poll loop meets them (consumer/runtime/gaps.py says what a gap is and how it is filled):
a position librdkafka could not fetch from, positioned again; a lost range named, counted, shown on /readyz and
handed to the backfill; the partition's commit held below it until the backfill is done.

:meth:`Gaps.filled` is the backfill thread's; everything else runs on the poll loop."""

from __future__ import annotations

import logging
import queue
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.runtime.gaps import Gap, handled_at
from consumer.runtime.health import Health
from consumer.runtime.offsets import OffsetTracker
from consumer.telemetry import Metrics

log = logging.getLogger("allocguard.runtime")

Key = tuple[str, int]


class Gaps:
    def __init__(
        self,
        consumer: Consumer,
        health: Health,
        tracker: OffsetTracker,
        metrics: Metrics,
        *,
        latest: bool,
        handled_ms: Callable[[Key], int | None],
        on_gap: Callable[[Gap], None],
    ) -> None:
        self._consumer = consumer
        self._health = health
        self._tracker = tracker
        self._metrics = metrics
        #: a partition never committed starts at the end (``latest``) or at the beginning
        self._latest = latest
        self._handled_ms = handled_ms
        self._on_gap = on_gap
        #: partitions librdkafka could not position (out of range during the run): partition → requested offset
        self._unpositioned: dict[Key, int] = {}
        #: gaps being backfilled (their partitions' commits are held below the gap until done)
        self._open: dict[Key, Gap] = {}
        self._done: queue.SimpleQueue[Key] = queue.SimpleQueue()

    def out_of_range(self, topic: str, partition: int, requested: int) -> None:
        """The position is out of the log's range (retention ran past it mid-run): fetching has stopped."""
        self._unpositioned[(topic, partition)] = requested

    @property
    def unpositioned(self) -> bool:
        return bool(self._unpositioned)

    def holds(self, key: Key) -> bool:
        """The partition's commit stays below its gap until the backfill is done."""
        return key in self._open

    def reposition(self) -> None:
        """Partitions whose position fell out of the log's range during the run (librdkafka stopped fetching
        them: auto.offset.reset=error): a new partition starts as a new group would; a lost range is a gap,
        and reading resumes at the earliest retained record. Tried again next turn if the broker is away."""
        for key, requested in list(self._unpositioned.items()):
            topic, partition = key
            where = TopicPartition(topic, partition)
            try:
                low, high = (int(mark) for mark in self._consumer.get_watermark_offsets(where, timeout=5))
                committed = self._consumer.committed([where], timeout=5)[0]
            except KafkaException as exc:
                log.warning("cannot position %s[%d] yet (trying again): %s", topic, partition, exc)
                return
            del self._unpositioned[key]
            lost_from = requested if requested >= 0 else committed.offset
            gap: Gap | None = None
            if lost_from < 0:  # never committed: where a new group starts
                start = high if self._latest else low
            elif low <= lost_from <= high:
                start = lost_from  # in range again (the log moved meanwhile): nothing lost
            else:
                handled = self._handled_ms(key)
                since = datetime.fromtimestamp(handled / 1000, UTC) if handled else handled_at(committed.metadata)
                gap, start = Gap(topic, partition, lost_from, low, since), low
                if lost_from > high:  # the log restarted below us: what was in flight belongs to the old log
                    self._tracker.forget(topic, partition)
            # a partition librdkafka stopped fetching takes no seek: assign it again at the start
            self._consumer.incremental_unassign([where])
            self._consumer.incremental_assign([TopicPartition(topic, partition, start)])
            if start > 0:
                # read up to here: what lies below is handled, in flight (still held) or the gap's (backfilled) —
                # without it, a partition that gets nothing new kept its commit below the gap after the backfill
                self._tracker.seen(topic, partition, start - 1)
            log.info(
                "positioned %s[%d] at %d (requested %d; log %d..%d)", topic, partition, start, requested, low, high
            )
            if gap is not None:
                self._found(gap)

    def recreated(self, committed: TopicPartition, since: datetime | None) -> None:
        """At assignment: ``committed`` was made on a topic since deleted and created again (its id changed). The
        partition starts at the new log's beginning (its offset is set here, before it is assigned) and the time
        since the commit is backfilled."""
        try:
            low = int(self._consumer.get_watermark_offsets(TopicPartition(committed.topic, committed.partition), 5)[0])
        except KafkaException:
            low = 0
        gap = Gap(committed.topic, committed.partition, committed.offset, low, since, recreated=True)
        committed.offset = low
        self._tracker.forget(committed.topic, committed.partition)  # what was in flight belongs to the old log
        self._found(gap)

    def _found(self, gap: Gap) -> None:
        log.error("%s", gap.describe())
        self._metrics.gaps.add(1, {"topic": gap.topic})
        if gap.lost_to > gap.lost_from:
            self._metrics.gap_records.add(gap.lost_to - gap.lost_from, {"topic": gap.topic})
        self._open[gap.key] = gap
        with self._health.lock:
            self._health.gaps[gap.where] = f"records lost in {gap.where} ({gap.lost_from}..{gap.lost_to}): backfilling"
        self._on_gap(gap)

    def filled(self, gap: Gap) -> None:
        """From the backfill thread: the partition's commit may move past the gap (at the next store)."""
        with self._health.lock:
            self._health.gaps.pop(gap.where, None)
        self._done.put(gap.key)

    def closed(self) -> Iterator[Gap]:
        """Gaps whose backfill finished since the last call: their partitions' commits move again."""
        while not self._done.empty():
            gap = self._open.pop(self._done.get_nowait(), None)
            if gap is not None:
                yield gap

    def forget(self, key: Key) -> None:
        """The partition moved to another member: its commit was held below the gap, so the next owner finds the
        gap again and fills it."""
        gap = self._open.pop(key, None)
        if gap is not None:
            with self._health.lock:
                self._health.gaps.pop(gap.where, None)
