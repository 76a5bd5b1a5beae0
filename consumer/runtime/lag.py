"""The lag gauge's samples: end offset - position per owned partition, from what the client already knows."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping

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

    def sample(
        self,
        positions: Callable[[], dict[Key, int]],
        every_s: float = 5.0,
        unknown_s: float = 0.5,
        ends: Mapping[Key, int] = {},
    ) -> None:
        """Consumer lag per partition (end offset - position) for the lag gauge, from what the client already knows
        (cached high watermarks from its fetch responses): no broker round trip on the loop, nothing that can
        fail when a broker is away. A partition that stopped fetching gets no fetch responses, so its cached end
        stands still too: ``ends``, the log ends the fetch watch had read for partitions whose position stood
        still (consumer/runtime/stalls.py), count where they are further. Until every owned partition has a
        value (its end is known after the first fetch response), it samples again within ``unknown_s`` rather
        than ``every_s``: the gauge exists from the member's first seconds, not only after its second full
        interval. ``positions``: where each owned partition is read to (asked only when a sample is due)."""
        now = time.monotonic()
        if now < self._lag_due or not self.health.assigned:
            return
        assigned = len(self.health.assigned)
        known = 0
        try:
            for key, at in positions().items():
                marks = self.consumer.get_watermark_offsets(TopicPartition(*key), cached=True)
                end = max(int(marks[1]) if marks else -1, ends.get(key, -1))
                if end >= 0:
                    self.metrics.lag[key] = max(0, end - at)
                    known += 1
        except KafkaException as exc:
            log.debug("lag not sampled: %s", exc)
        self._lag_due = now + (every_s if known == assigned else unknown_s)
