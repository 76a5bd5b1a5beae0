"""Topic positions, read robustly (a freshly created partition refuses offset queries for a moment)."""

from __future__ import annotations

import time

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
