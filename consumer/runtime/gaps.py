"""Retention gaps: records a partition still needed were deleted (Kafka's retention ran while allocguard was
behind, or the topic was re-created) before they were handled.

Never skipped silently: reading resumes at the earliest retained record (never the end), the gap is logged as an
ERROR naming the partition and the lost offsets, counted (``allocguard_kafka_gaps_total``), and ``/readyz``
says so until it is handled. Handling it means a **backfill from the source**: the platform's
``observability_events`` rows of the signal kinds created between the last handled event (its time travels with
the committed offset, as metadata) and the first retained record are re-read from PostgreSQL and sent through the
live path (so what they do follows the mode, and what was already handled is recognised as such); then a
reconcile sweep of every window from now catches what the lost change events of other tables would have shown.
The partition's committed offset stays below the gap until then: a process that dies mid-backfill leaves the gap
for the next owner to find and fill again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

#: the committed offset's metadata: the Kafka timestamp (ms) of an event at or before the last one handled
_PREFIX = "allocguard:handled_ms="


def handled_metadata(timestamp_ms: int) -> str:
    return f"{_PREFIX}{timestamp_ms}"


def handled_at(metadata: str | None) -> datetime | None:
    """The time kept with a commit by :func:`handled_metadata`; None for a commit without it."""
    if not metadata or not metadata.startswith(_PREFIX):
        return None
    try:
        return datetime.fromtimestamp(int(metadata[len(_PREFIX) :]) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True)
class Gap:
    topic: str
    partition: int
    #: the first offset that was needed and is gone (the committed or requested position)
    lost_from: int
    #: the first retained offset: where reading resumes
    lost_to: int
    #: when the last handled event of the partition happened (None: not kept with the commit)
    since: datetime | None

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def describe(self) -> str:
        if self.lost_from > self.lost_to:  # the log restarted below the position: re-created or truncated
            lost = f"position {self.lost_from} is beyond the log (the topic was re-created or truncated)"
        else:
            lost = (
                f"offsets {self.lost_from}..{self.lost_to - 1} ({self.lost_to - self.lost_from} records) were deleted"
            )
        since = self.since.isoformat() if self.since else "an unknown time (no time kept with the commit)"
        return (
            f"records lost in {self.where}: {lost} before they were handled; reading resumes at offset "
            f"{self.lost_to}, the earliest retained; backfilling from observability_events since {since}"
        )


def first_retained_time(config: dict[str, Any], topic: str, partition: int, offset: int) -> datetime | None:
    """The Kafka timestamp of the record at ``offset`` (the first retained one), read by a throwaway consumer
    (no group membership, nothing committed); None when the partition holds nothing there yet."""
    reader = Consumer({**config, "group.id": f"allocguard-gap-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    try:
        _, high = reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high <= offset:  # nothing retained yet: the gap runs up to now
            return None
        reader.assign([TopicPartition(topic, partition, offset)])
        message = reader.poll(10.0)
        if message is None or message.error() is not None:
            return None
        kind, timestamp_ms = message.timestamp()
        return datetime.fromtimestamp(timestamp_ms / 1000, UTC) if kind and timestamp_ms > 0 else None
    except KafkaException:
        return None
    finally:
        reader.close()
