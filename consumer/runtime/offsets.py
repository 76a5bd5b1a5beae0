"""Offsets: what may be committed (the tracker of work in flight per partition), and topic positions read
robustly (a freshly created partition refuses offset queries for a moment)."""

from __future__ import annotations

import heapq
import time
from collections import defaultdict

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

_TRANSIENT = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def watermarks(consumer: Consumer, topics: list[str], timeout: float = 30.0) -> dict[TopicPartition, tuple[int, int]]:
    """(low, high) for every partition of ``topics``; retries leader elections until ``timeout``."""
    deadline = time.monotonic() + timeout
    result: dict[TopicPartition, tuple[int, int]] = {}
    metadata = consumer.list_topics(timeout=10)
    for topic in topics:
        if topic not in metadata.topics:
            raise KafkaException(KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} does not exist"))
        for partition in metadata.topics[topic].partitions:
            tp = TopicPartition(topic, partition)
            delay = 0.05
            while True:
                try:
                    offsets = consumer.get_watermark_offsets(tp, timeout=5)
                except KafkaException as exc:
                    error = exc.args[0]
                    if not isinstance(error, KafkaError) or error.code() not in _TRANSIENT:
                        raise
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                    continue
                result[tp] = (int(offsets[0]), int(offsets[1])) if offsets else (0, 0)
                break
    return result


def end_positions(consumer: Consumer, topics: list[str], timeout: float = 30.0) -> list[TopicPartition]:
    """Every partition positioned at its current end: reading from there sees only what comes next."""
    return [
        TopicPartition(tp.topic, tp.partition, high) for tp, (_, high) in watermarks(consumer, topics, timeout).items()
    ]


def start_positions(consumer: Consumer, topics: list[str], timeout: float = 30.0) -> list[TopicPartition]:
    return [
        TopicPartition(tp.topic, tp.partition, low) for tp, (low, _) in watermarks(consumer, topics, timeout).items()
    ]


class OffsetTracker:
    """Per partition: the offsets of work in flight, and how far the partition has been read.

    Offsets arrive in order within a partition, so what is done at once (almost everything) needs no record: the
    committable position is the lowest offset still in flight, or else the one after the last offset seen. A
    slow signal therefore holds its partition's commit (never its reading): exactly as strong as tracking every
    message, at the cost of one integer per partition."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._done: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._next: dict[tuple[str, int], int] = {}

    def seen(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        if offset >= self._next.get(key, -1):
            self._next[key] = offset + 1

    def started(self, topic: str, partition: int, offset: int) -> None:
        heapq.heappush(self._pending[(topic, partition)], offset)
        self.seen(topic, partition, offset)

    def completed(self, topic: str, partition: int, offset: int) -> None:
        key = (topic, partition)
        pending, done = self._pending[key], self._done[key]
        done.add(offset)
        while pending and pending[0] in done:
            done.discard(heapq.heappop(pending))

    def position(self, topic: str, partition: int) -> int | None:
        """The offset to commit: nothing at or after it is done unless everything before it is."""
        pending = self._pending.get((topic, partition))
        return pending[0] if pending else self._next.get((topic, partition))

    def in_flight(self, topic: str | None = None, partition: int | None = None) -> int:
        if topic is None:
            return sum(len(p) for p in self._pending.values())
        return len(self._pending.get((topic, partition or 0), []))

    def forget(self, topic: str, partition: int) -> None:
        self._pending.pop((topic, partition), None)
        self._done.pop((topic, partition), None)
        self._next.pop((topic, partition), None)
