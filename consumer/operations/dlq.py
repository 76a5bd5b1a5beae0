"""``allocguard dlq replay``: re-drive dead-lettered messages through the normal path, after a fix.

The dead-letter topic keeps each message's original key, value and headers plus the reason
(``allocguard.error.*``) and where it came from (``allocguard.source.*``). Replay reads it up to the end offsets
taken when it starts, decodes each message again and hands what is now a signal to the same remediator as
``allocguard run``. That path is idempotent (processed markers, unique plan keys), so replaying twice, or
replaying what the live consumer already handled, changes nothing. Progress is committed under its own group
(never the live one), so a second run continues where the first stopped; ``--from-beginning`` re-reads all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from consumer.config import RuntimeSettings
from consumer.operations import standalone_remediator
from consumer.runtime.health import kafka_log
from consumer.runtime.offsets import watermarks
from handlers.pipeline import Remediator
from schemas import ChangeEvent, decode_message
from schemas.errors import CdcDecodeError
from schemas.records import Mode
from schemas.rows import ObservabilityEvent


@dataclass
class DlqReplaySummary:
    read: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    #: messages that still do not decode, with their coordinates and the reason
    still_bad: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"{self.read} dead-lettered message(s) read"]
        lines += [f"  {name:<22} {count}" for name, count in sorted(self.outcomes.items())]
        lines += [f"  still undecodable: {text}" for text in self.still_bad]
        return lines


def _header(message: Any, name: str) -> str | None:
    for key, value in message.headers() or []:
        if key == name:
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def replay_dlq(
    settings: RuntimeSettings,
    *,
    group: str | None = None,
    from_beginning: bool = False,
    echo: Callable[[str], None] = print,
) -> DlqReplaySummary:
    topic = settings.resolved_dlq()
    consumer = Consumer(
        {
            "bootstrap.servers": settings.resolved_bootstrap(),
            **settings.librdkafka(),
            "group.id": group or f"{settings.group_id}-dlq-replay",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "logger": kafka_log,
        }
    )
    remediator, connections = standalone_remediator(
        settings, Mode(settings.mode), "allocguard-dlq-replay", settings.artifacts_dir
    )
    summary = DlqReplaySummary()
    try:
        ends = {tp: high for tp, (_, high) in watermarks(consumer, [topic]).items()}
        committed = {(p.topic, p.partition): p.offset for p in consumer.committed(list(ends), timeout=10)}
        starts = []
        for tp in ends:
            done = committed[(tp.topic, tp.partition)]
            starts.append(TopicPartition(tp.topic, tp.partition, 0 if from_beginning or done < 0 else done))
        remaining = {(tp.topic, tp.partition): ends[tp] for tp in ends}
        for start in starts:
            if start.offset >= remaining[(start.topic, start.partition)]:
                del remaining[(start.topic, start.partition)]
        consumer.assign(starts)
        while remaining:
            message = consumer.poll(1.0)
            if message is None or message.error() is not None:
                continue
            where = (message.topic() or "", message.partition() or 0)
            if where not in remaining or (message.offset() or 0) >= remaining[where]:
                continue
            summary.read += 1
            summary.outcomes[_redrive(remediator, message, summary)] += 1
            consumer.commit(message=message, asynchronous=False)
            if (message.offset() or 0) + 1 >= remaining[where]:
                del remaining[where]
    finally:
        consumer.close()
        connections.close()
    for line in summary.lines():
        echo(line)
    return summary


def _redrive(remediator: Remediator, message: Any, summary: DlqReplaySummary) -> str:
    source = _header(message, "allocguard.source.topic") or ""
    partition = int(_header(message, "allocguard.source.partition") or -1)
    offset = int(_header(message, "allocguard.source.offset") or -1)
    try:
        record = decode_message(source, partition, offset, message.key(), message.value())
    except CdcDecodeError as exc:
        summary.still_bad.append(f"{source}[{partition}]@{offset}: {exc.field}: {exc.reason}")
        return "still_undecodable"
    if not isinstance(record, ChangeEvent) or not isinstance(record.after, ObservabilityEvent):
        return "not_a_signal"
    result = remediator.observe(record.after)
    return "hold_remembered" if result is None else result.status
