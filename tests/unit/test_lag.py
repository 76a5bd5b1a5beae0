"""The lag gauge exists from a member's first seconds: until every owned partition's end is known (librdkafka
learns it from the first fetch response), the loop samples again at once instead of waiting a full interval —
a scrape in between found no ``allocguard_consumer_lag`` at all (a CI run's failure)."""

from __future__ import annotations

import re
import threading
from typing import Any, cast

from confluent_kafka import OFFSET_INVALID, Consumer, KafkaException, TopicPartition

from consumer.config import RuntimeSettings
from consumer.runtime.health import Health, Outage
from consumer.runtime.offsets import OffsetTracker
from consumer.runtime.partitions import Partitions
from consumer.telemetry import Metrics


class Client:
    """What sample_lag asks librdkafka: positions and the cached high watermarks."""

    def __init__(self) -> None:
        self.high: dict[tuple[str, int], int] = {}
        self.positions: dict[tuple[str, int], int] = {}
        self.asked = 0
        self.committed_at: dict[tuple[str, int], int] = {}

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [
            TopicPartition(p.topic, p.partition, self.committed_at.get((p.topic, p.partition), OFFSET_INVALID))
            for p in partitions
        ]

    def list_topics(self, topic: str, timeout: float) -> Any:
        raise KafkaException("no metadata here: the count comes from the assignment")

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        self.asked += 1
        return [
            TopicPartition(p.topic, p.partition, self.positions.get((p.topic, p.partition), OFFSET_INVALID))
            for p in partitions
        ]

    def get_watermark_offsets(self, partition: TopicPartition, cached: bool = False) -> tuple[int, int]:
        assert cached, "the loop must never wait on a broker round trip for a gauge"
        return (0, self.high.get((partition.topic, partition.partition), OFFSET_INVALID))


def partitions_over(client: Client, metrics: Metrics, assigned: set[tuple[str, int]]) -> Partitions:
    health = Health(assigned=set(assigned))
    return Partitions(
        cast(Consumer, client),
        RuntimeSettings(),
        health,
        OffsetTracker(),
        metrics,
        Outage("kafka", lambda: None),
        stats={},
        drain=lambda timeout: None,
        stop=threading.Event(),
        on_gap=lambda gap: None,
        describe=lambda topics: {},
    )


SAMPLE = re.compile(r'^allocguard_consumer_lag\{.*partition="(\d+)",topic="([^"]+)"\} (\S+)$', re.MULTILINE)


def exported_lag(metrics: Metrics) -> dict[tuple[str, int], float]:
    """What a scrape says: (topic, partition) → lag."""
    return {(t, int(p)): float(v) for p, t, v in SAMPLE.findall(metrics.exposition().decode())}


def test_a_partition_whose_end_is_not_known_yet_is_sampled_again_at_once() -> None:
    client, metrics = Client(), Metrics()
    partitions = partitions_over(client, metrics, {("t", 0), ("t", 1)})
    client.positions = {("t", 0): 5, ("t", 1): 2}
    partitions.sample_lag(every_s=3600, unknown_s=0)
    assert exported_lag(metrics) == {}  # no end known: nothing to say yet

    client.high = {("t", 0): 9}  # the first fetch response of partition 0
    partitions.sample_lag(every_s=3600, unknown_s=0)
    assert exported_lag(metrics) == {("t", 0): 4.0}

    client.high[("t", 1)] = 2
    partitions.sample_lag(every_s=3600, unknown_s=0)
    lag = exported_lag(metrics)
    assert lag[("t", 1)] == 0.0

    asked = client.asked
    client.high[("t", 0)] = 100
    partitions.sample_lag(every_s=3600, unknown_s=0)  # every end known: the next sample waits its interval
    assert client.asked == asked
    assert exported_lag(metrics)[("t", 0)] == 4.0


def test_a_partition_nothing_was_read_from_counts_from_where_it_started() -> None:
    client, metrics = Client(), Metrics()
    partitions = partitions_over(client, metrics, set())
    client.committed_at = {("t", 0): 40}
    partitions.on_assign(cast(Consumer, client), [TopicPartition("t", 0)])
    client.high = {("t", 0): 52}
    partitions.sample_lag(every_s=3600, unknown_s=0)
    assert exported_lag(metrics) == {("t", 0): 12.0}
