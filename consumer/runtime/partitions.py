"""The partitions this member owns: where each starts at assignment, what is committed on revoke, how far each has
been handled (the offsets stored for the next commit, with a handled time in the commit's metadata), a position
retention deleted (a gap, consumer/runtime/retention.py),
backpressure, a member that lost its partitions and never got them back, and the lag gauge.

Everything here runs on the poll loop's thread (the rebalance callbacks run inside ``poll``)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from consumer.config import RuntimeSettings
from consumer.runtime.gaps import Gap, handled_at, handled_metadata
from consumer.runtime.health import Health, Outage
from consumer.runtime.lag import LagSampler
from consumer.runtime.offsets import OffsetTracker
from consumer.runtime.retention import Gaps
from consumer.runtime.stalls import FetchWatch
from consumer.runtime.topics import Describe, Topics
from consumer.telemetry import Metrics

log = logging.getLogger("allocguard.runtime")

Key = tuple[str, int]


class Partitions:
    def __init__(
        self,
        consumer: Consumer,
        settings: RuntimeSettings,
        health: Health,
        tracker: OffsetTracker,
        metrics: Metrics,
        kafka_outage: Outage,
        *,
        stats: dict[str, float],
        drain: Callable[[float], None],
        stop: threading.Event,
        on_gap: Callable[[Gap], None],
        describe: Describe,
    ) -> None:
        self.consumer = consumer
        self.settings = settings
        self.health = health
        self.tracker = tracker
        self.metrics = metrics
        self.kafka_outage = kafka_outage
        self.stats = stats
        #: the loop's completions, drained while a revoke waits for in-flight work
        self._drain = drain
        self._stop = stop
        self.paused = False
        #: when partitions were last lost to a session timeout, until the next assignment (see watch_group)
        self.lost_at: float | None = None
        #: where each partition started at assignment: the position until something is consumed there
        self._starts: dict[Key, int] = {}
        #: per partition, (offset, Kafka timestamp ms) of a message read: a time at or before what is handled
        self._marks: dict[Key, tuple[int, int]] = {}
        #: per partition, the handled time last stored with its offset
        self._handled_ms: dict[Key, int] = {}
        #: the next offsets to store, by partition
        self._positions: dict[Key, int] = {}
        self._lag = LagSampler(consumer, health, metrics)
        #: partition counts, whether the group read a topic before, topic ids (consumer/runtime/topics.py)
        self.topics = Topics(describe)
        #: partitions whose fetch stopped (consumer/runtime/stalls.py); the probe reads the ends it asks for
        self.fetches = FetchWatch(settings.fetch_stall_s)
        self._fetch_due = 0.0
        #: retention gaps: positions out of range, lost ranges being backfilled
        self.gaps = Gaps(
            consumer,
            health,
            tracker,
            metrics,
            latest=settings.auto_offset_reset == "latest",
            handled_ms=self._handled_ms.get,
            on_gap=on_gap,
        )

    def subscribe(self) -> None:
        self.consumer.subscribe(
            self.settings.topics(), on_assign=self.on_assign, on_revoke=self.on_revoke, on_lost=self.on_lost
        )

    # -- rebalances --

    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Every partition starts where it should *now*: at its committed offset; a new group's at the end
        (``latest``: once ready, no event written afterwards is skipped) or the beginning. A committed offset the
        log no longer holds (retention ran, the topic was re-created) is found by the first fetch: reading resumes
        at the earliest retained record — never the end — and the lost range is backfilled (:meth:`reposition`,
        consumer/runtime/gaps.py)."""
        try:
            positioned = consumer.committed(partitions, timeout=10)
        except KafkaException as exc:
            # the coordinator is out of reach: librdkafka resolves the positions itself when it is back (a position
            # out of range then comes back as _AUTO_OFFSET_RESET: reposition)
            self.kafka_outage.down(f"committed offsets unavailable at assignment: {exc}")
            consumer.incremental_assign(partitions)
            self.health.assigned |= {(p.topic, p.partition) for p in partitions}
            self.lost_at = None
            return
        self.topics.first_sight(consumer, positioned)
        self.topics.refresh(p.topic for p in positioned)
        fresh: list[TopicPartition] = []
        now_ms = int(time.time() * 1000)
        for partition in positioned:
            handled = handled_at(partition.metadata)
            if handled is not None:  # carried forward with every commit until a later time is known
                self._handled_ms[(partition.topic, partition.partition)] = int(handled.timestamp() * 1000)
            if partition.offset >= 0:
                # a committed offset the log no longer holds comes back from the first fetch as
                # _AUTO_OFFSET_RESET (auto.offset.reset=error): reposition names the gap and fills it; one made on
                # a topic since deleted and created again may be inside the new log: told by the topic's id
                if self.topics.recreated(partition):
                    self.gaps.recreated(partition, handled)
                continue
            latest = self.settings.auto_offset_reset == "latest" and not self.topics.added(partition)
            try:
                low, high = (int(mark) for mark in consumer.get_watermark_offsets(partition, timeout=10))
            except KafkaException:  # librdkafka resolves it: _AUTO_OFFSET_RESET, then reposition
                partition.offset = OFFSET_END if latest else OFFSET_BEGINNING
                continue
            partition.offset = high if latest else low
            start = TopicPartition(partition.topic, partition.partition, partition.offset)
            if latest:  # everything written from now on is ours
                start = self._stored((partition.topic, partition.partition), partition.offset, now_ms)
            fresh.append(start)
        consumer.incremental_assign(positioned)
        if fresh:
            # commit the start at once: should the partition move to another member before anything is
            # processed here, that member resumes from this point instead of skipping to a later end
            try:
                consumer.commit(offsets=fresh, asynchronous=False)
            except KafkaException as exc:
                log.warning("could not commit start positions %s: %s", fresh, exc)
        self._starts.update({(p.topic, p.partition): p.offset for p in positioned if p.offset >= 0})
        self.health.assigned |= {(p.topic, p.partition) for p in partitions}
        self.lost_at = None
        log.info("assigned %s", [f"{p.topic}[{p.partition}]@{p.offset}" for p in positioned])

    def on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Finish (within a bound) the work of the revoked partitions, store and commit their offsets."""
        revoked = {(p.topic, p.partition) for p in partitions}
        deadline = time.monotonic() + self.settings.revoke_timeout_s
        # while stopping, the shutdown already waited for what could finish: the rest is abandoned, not awaited
        while (
            not self._stop.is_set()
            and any(self.tracker.in_flight(t, p) for t, p in revoked)
            and time.monotonic() < deadline
        ):
            self._drain(0.05)
        unfinished = [f"{t}[{p}]" for t, p in revoked if self.tracker.in_flight(t, p)]
        if unfinished:
            log.warning("revoked with work still in flight (not committed): %s", unfinished)
        self.store()
        try:
            consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:
                log.warning("commit on revoke failed: %s", exc)
        self._forget(revoked)

    def on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        lost = {(p.topic, p.partition) for p in partitions}
        self._forget(lost)
        self.lost_at = time.monotonic()
        log.warning("partitions lost (no commit): %s", sorted(lost))

    def _forget(self, keys: set[Key]) -> None:
        for key in keys:
            self.gaps.forget(key)
            self.tracker.forget(*key)
            self._starts.pop(key, None)
            self.metrics.lag.pop(key, None)
        self.health.assigned -= keys

    def watch_group(self) -> None:
        """A member whose partitions were lost to a session timeout (the broker was away) rejoins by itself — almost
        always. Seen here about once in ten broker restarts under traffic: it never did, polling with nothing
        assigned while the broker was back (the chaos suite lost every incident after it). So: once the broker has
        been reachable for ``rejoin_after_s`` since the loss with no assignment at all (not even an empty one), the
        member leaves and joins again; it repeats at that pace until it is assigned."""
        lost_at = self.lost_at
        if lost_at is None:
            return
        now = time.monotonic()
        if self.kafka_outage.is_down:
            self.lost_at = now  # the clock runs only while the broker is reachable
            return
        if now - lost_at < self.settings.rejoin_after_s:
            return
        log.warning(
            "no assignment %.0fs after partitions were lost, with the broker reachable: leaving and joining again",
            now - lost_at,
        )
        self.lost_at = now
        self._rejoin()

    def _rejoin(self) -> None:
        self.metrics.rejoins.add(1)
        self.fetches.reset()
        self.consumer.unsubscribe()
        self.subscribe()

    def watch_fetch(self, every_s: float = 1.0) -> None:
        """Once a second: an assigned partition that is not paused, with the broker reachable, whose position has
        not moved for ``fetch_stall_s`` while the log goes on past it has stopped fetching
        (consumer/runtime/stalls.py): its fetch is restarted; still stalled one period later, the member leaves
        and joins its group again."""
        now = time.monotonic()
        if now < self._fetch_due:
            return
        self._fetch_due = now + every_s
        watch, assigned = self.fetches, self.health.assigned
        if self.paused or not assigned or self.kafka_outage.is_down or self.gaps.unpositioned:
            watch.reset()
            return
        try:
            positions = self._read_to()
        except KafkaException as exc:
            log.debug("positions not read: %s", exc)
            return
        restart, rejoin = watch.judge(positions, now)
        if restart:
            stalled = [TopicPartition(t, p, positions[(t, p)]) for t, p in restart]
            log.warning(
                "nothing fetched for %.0fs with the broker reachable while the log goes on: restarting the fetch of %s",
                watch.stall_s,
                [
                    f"{tp.topic}[{tp.partition}]@{tp.offset} (log end {watch.ends.get((tp.topic, tp.partition))})"
                    for tp in stalled
                ],
            )
            self.metrics.fetch_stalls.add(len(stalled), {"action": "restart"})
            self.consumer.resume(stalled)
            for tp in stalled:
                try:
                    self.consumer.seek(tp)
                except KafkaException as exc:
                    log.warning("could not seek %s[%d]: %s", tp.topic, tp.partition, exc)
        if rejoin:
            log.warning(
                "still nothing fetched %.0fs after restarting the fetch of %s: leaving and joining again",
                watch.stall_s,
                [f"{t}[{p}]" for t, p in rejoin],
            )
            self.metrics.fetch_stalls.add(len(rejoin), {"action": "rejoin"})
            self._rejoin()

    # -- progress and commits --

    def mark(self, topic: str, partition: int, offset: int, timestamp_ms: int) -> None:
        """A message read at ``offset``: its Kafka time is at or before what this partition has handled once the
        position passes it (one mark per poll batch)."""
        self._marks[(topic, partition)] = (offset, timestamp_ms)

    def read_past_skipped(self) -> None:
        """After a batch of skipped messages: how far each partition has been read (the consumer knows: one call
        per batch, not per message); anything in flight still holds the commit at its own offset."""
        tracker = self.tracker
        for read in self.consumer.position([TopicPartition(t, p) for t, p in self.health.assigned]):
            if read.offset > 0:
                where = (read.topic, read.partition)
                tracker.seen(read.topic, read.partition, read.offset - 1)
                position = tracker.position(*where)
                if position is not None:
                    self._positions[where] = position

    def complete(self, topic: str, partition: int, offset: int) -> None:
        if (topic, partition) not in self.health.assigned:
            return
        self.stats["completed"] += 1
        self.stats["last_done_at"] = time.monotonic()
        self.tracker.completed(topic, partition, offset)
        position = self.tracker.position(topic, partition)
        if position is not None:
            self._positions[(topic, partition)] = position

    def store(self) -> None:
        """Store what may be committed, with a time at or before the last handled event (the commit's metadata:
        a gap found later is backfilled from there). A partition with a gap being backfilled stays below it."""
        for gap in self.gaps.closed():
            if gap.key in self.health.assigned:
                position = self.tracker.position(*gap.key)  # None: nothing read there since the gap
                self._positions[gap.key] = gap.lost_to if position is None else position
        if self._positions:
            holds = self.gaps.holds
            offsets = [self._stored(key, offset) for key, offset in self._positions.items() if not holds(key)]
            if offsets:
                self.consumer.store_offsets(offsets=offsets)
            self._positions.clear()

    def _stored(self, key: Key, offset: int, handled_ms: int | None = None) -> TopicPartition:
        mark = self._marks.get(key)
        if handled_ms is not None:
            self._handled_ms[key] = handled_ms
        elif mark is not None and mark[0] < offset:
            self._handled_ms[key] = mark[1]
        metadata = handled_metadata(self._handled_ms.get(key), self.topics.id_of(key[0]))
        if metadata is None:
            return TopicPartition(key[0], key[1], offset)
        return TopicPartition(key[0], key[1], offset, metadata=metadata)

    def backpressure(self) -> None:
        """Pause every assigned partition while too much is in flight, or while an infrastructure failure holds
        work back (the loop keeps polling, so the member stays in the group); resume when both clear."""
        in_flight = self.health.in_flight = self.tracker.in_flight()
        assignment = [TopicPartition(t, p) for t, p in self.health.assigned]
        held = bool(self.health.degraded)
        if not self.paused and assignment and (held or in_flight >= self.settings.max_in_flight):
            self.consumer.pause(assignment)
            self.paused = True
        elif self.paused and not held and in_flight <= self.settings.max_in_flight // 2:
            self.consumer.resume(assignment)
            self.paused = False

    def sample_lag(self, every_s: float = 5.0, unknown_s: float = 0.5) -> None:
        """The lag gauge's sample (:class:`~consumer.runtime.lag.LagSampler`), with the log ends the fetch watch
        read (a stalled fetch shows as lag)."""
        self._lag.sample(self._read_to, every_s, unknown_s, self.fetches.ends)

    def _read_to(self) -> dict[Key, int]:
        """Where each owned partition is read to: the consumer's position, else where it started (nothing consumed
        there yet); a partition with neither is left out. Raises KafkaException."""
        positions: dict[Key, int] = {}
        for tp in self.consumer.position([TopicPartition(t, p) for t, p in self.health.assigned]):
            key = (tp.topic, tp.partition)
            at = tp.offset if tp.offset >= 0 else self._starts.get(key, -1)
            if at >= 0:
                positions[key] = at
        return positions
