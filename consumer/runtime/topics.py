"""What this member knows of each topic it consumes, beyond its partitions: how many partitions it had when this
process first saw it, whether the group had read it before, and its **id** (Kafka's topic UUID, KIP-516).

The id travels with every commit (consumer/runtime/gaps.py, the commit's metadata): a topic deleted and created
again under the same name has another id, and its offsets start again at 0 — below or even at the committed
offset, where librdkafka would fetch on and skip the new log's first records without a word. At assignment, a
commit made on another id than the topic's now is a gap (the topic was re-created): reading starts at the new log's
beginning and the time since the commit is backfilled."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.runtime.gaps import committed_topic_id

log = logging.getLogger("allocguard.runtime")

#: topic name → id, for those the broker describes (a failure leaves a topic out: no id, no check)
Describe = Callable[[list[str]], dict[str, str]]


class Topics:
    def __init__(self, describe: Describe) -> None:
        self._describe = describe
        #: per topic, its partition count when this process first saw it, and whether the group had read it before
        self._seen: dict[str, tuple[int, bool]] = {}
        self._ids: dict[str, str] = {}

    def refresh(self, topics: Iterable[str]) -> None:
        """Read the topics' ids now (at every assignment: a topic re-created meanwhile gets its new id)."""
        wanted = sorted(set(topics))
        if wanted:
            try:
                self._ids.update(self._describe(wanted))
            except KafkaException as exc:  # no id this time: commits keep the last known one, nothing is judged
                log.warning("could not read the ids of %s: %s", wanted, exc)

    def id_of(self, topic: str) -> str | None:
        return self._ids.get(topic)

    def recreated(self, committed: TopicPartition) -> bool:
        """The commit was made on a topic of the same name that is gone (both ids known and different)."""
        then, now = committed_topic_id(committed.metadata), self._ids.get(committed.topic)
        return then is not None and now is not None and then != now

    def first_sight(self, consumer: Consumer, positioned: list[TopicPartition]) -> None:
        """For each topic seen for the first time: how many partitions it had, and whether the group had read it
        before this process (a committed offset on any of its partitions)."""
        for topic in {p.topic for p in positioned} - set(self._seen):
            committed = any(p.offset >= 0 for p in positioned if p.topic == topic)
            try:
                count = len(consumer.list_topics(topic, timeout=5).topics[topic].partitions)
            except (KafkaException, KeyError):
                count = 1 + max(p.partition for p in positioned if p.topic == topic)
            self._seen[topic] = (count, committed)

    def added(self, partition: TopicPartition) -> bool:
        """A partition with no committed offset that is new to a topic the group reads — added while this process
        ran, or while the group was away: its records are all new to the group, so it starts at its beginning (a
        new group's partitions start at the end: ``latest``)."""
        count, group_read_it = self._seen.get(partition.topic, (0, False))
        return group_read_it or partition.partition >= count
