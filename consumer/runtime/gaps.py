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

#: the committed offset's metadata: ``allocguard:handled_ms=<ms>;topic_id=<id>`` — the Kafka timestamp (ms) of an
#: event at or before the last one handled, and the id of the topic the offset belongs to (Kafka's topic UUID: a
#: topic deleted and created again under the same name has another). Either may be missing; the previous format
#: (``allocguard:handled_ms=<ms>``) reads as a time with no id.
_PREFIX = "allocguard:"


def handled_metadata(timestamp_ms: int | None, topic_id: str | None = None) -> str | None:
    fields = [f"handled_ms={timestamp_ms}"] if timestamp_ms is not None else []
    fields += [f"topic_id={topic_id}"] if topic_id else []
    return _PREFIX + ";".join(fields) if fields else None


def _fields(metadata: str | None) -> dict[str, str]:
    if not metadata or not metadata.startswith(_PREFIX):
        return {}
    return dict(item.partition("=")[::2] for item in metadata[len(_PREFIX) :].split(";") if "=" in item)


def handled_at(metadata: str | None) -> datetime | None:
    """The time kept with a commit by :func:`handled_metadata`; None for a commit without it."""
    value = _fields(metadata).get("handled_ms")
    if value is None:
        return None
    try:
        return datetime.fromtimestamp(int(value) / 1000, UTC)
    except (ValueError, OverflowError, OSError):
        return None


def committed_topic_id(metadata: str | None) -> str | None:
    """The topic id kept with a commit by :func:`handled_metadata`; None for a commit without it."""
    return _fields(metadata).get("topic_id") or None


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
    #: the topic was deleted and created again since the commit (its id changed)
    recreated: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return self.topic, self.partition

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]"

    def describe(self) -> str:
        since = self.since.isoformat() if self.since else "an unknown time (no time kept with the commit)"
        backfill = f"backfilling from observability_events since {since}"
        if self.recreated:
            return (
                f"records lost in {self.where}: the topic was deleted and created again after offset {self.lost_from}"
                f" was committed (its id changed); reading resumes at offset {self.lost_to}, the new log's first;"
                f" {backfill}"
            )
        if self.lost_from > self.lost_to:  # the log restarted below the position: re-created or truncated
            lost = f"position {self.lost_from} is beyond the log (the topic was re-created or truncated)"
        else:
            lost = (
                f"offsets {self.lost_from}..{self.lost_to - 1} ({self.lost_to - self.lost_from} records) were deleted"
            )
        return (
            f"records lost in {self.where}: {lost} before they were handled; reading resumes at offset "
            f"{self.lost_to}, the earliest retained; {backfill}"
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
