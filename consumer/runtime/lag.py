"""The lag gauge's samples: end offset - position per owned partition, from what the client already knows."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from consumer.runtime.health import Health
from consumer.telemetry import Metrics

log = logging.getLogger("allocguard.runtime")

Key = tuple[str, int]


class LagSampler:
    def __init__(self, consumer: Consumer, health: Health, metrics: Metrics) -> None:
        self.consumer = consumer
        self.health = health
        self.metrics = metrics
        #: when the gauge is sampled next (monotonic)
        self._lag_due = 0.0

    def sample(self, starts: dict[Key, int], every_s: float = 5.0, unknown_s: float = 0.5) -> None:
        """Consumer lag per partition (end offset - position) for the lag gauge, from what the client already knows
        (cached high watermarks from its fetch responses): no broker round trip on the loop, nothing that can
        fail when a broker is away. Until every owned partition has a value (its end is known after the first
        fetch response), it samples again within ``unknown_s`` rather than ``every_s``: the gauge exists from the
        member's first seconds, not only after its second full interval."""
        now = time.monotonic()
        if now < self._lag_due or not self.health.assigned:
            return
        assigned = [TopicPartition(t, p) for t, p in self.health.assigned]
        known = 0
        try:
            for position in self.consumer.position(assigned):
                key = (position.topic, position.partition)
                at = position.offset if position.offset >= 0 else starts.get(key, -1)
                marks = self.consumer.get_watermark_offsets(position, cached=True)
                if marks and marks[1] >= 0 and at >= 0:
                    self.metrics.lag[key] = max(0, int(marks[1]) - at)
                    known += 1
        except KafkaException as exc:
            log.debug("lag not sampled: %s", exc)
        self._lag_due = now + (every_s if known == len(assigned) else unknown_s)
