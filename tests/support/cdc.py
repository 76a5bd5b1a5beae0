"""Reading real Debezium output from Kafka in tests: from the current end of the topics, with a deadline."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer

from consumer.runtime.offsets import end_positions
from schemas import Record, decode_message


@dataclass(frozen=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None

    def decode(self) -> Record:
        return decode_message(self.topic, self.partition, self.offset, self.key, self.value)

    def to_fixture(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode() if self.key is not None else None,
            "value": self.value.decode() if self.value is not None else None,
        }

    @classmethod
    def from_fixture(cls, doc: dict[str, Any]) -> RawMessage:
        key, value = doc["key"], doc["value"]
        return cls(
            doc["topic"],
            doc["partition"],
            doc["offset"],
            key.encode() if key is not None else None,
            value.encode() if value is not None else None,
        )


class CdcReader:
    """Assigned to every partition of ``topics`` at their high watermark *now*, so it sees only what follows."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self._consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": f"allocguard-test-{uuid.uuid4()}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
        assignment = end_positions(self._consumer, topics)
        self._consumer.assign(assignment)
        self.seen: list[RawMessage] = []

    def collect(self, wanted: Callable[[RawMessage], bool], count: int, timeout: float = 30.0) -> list[RawMessage]:
        """Poll until ``count`` messages matching ``wanted`` arrived, or fail at the deadline.

        Returns exactly the first ``count`` matches, in arrival order.
        """
        matched = [m for m in self.seen if wanted(m)]
        deadline = time.monotonic() + timeout
        while len(matched) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} matching CDC messages within {timeout}s, got {len(matched)}: "
                    + ", ".join(f"{m.topic}@{m.offset}" for m in matched)
                )
            message = self._consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                raise AssertionError(f"kafka error while reading CDC: {error}")
            raw = RawMessage(
                message.topic() or "", message.partition() or 0, message.offset() or 0, message.key(), message.value()
            )
            self.seen.append(raw)
            if wanted(raw):
                matched.append(raw)
        return matched[:count]

    def close(self) -> None:
        self._consumer.close()


def key_has(field: str, value: object) -> Callable[[RawMessage], bool]:
    """Matches messages (tombstones included) whose JSON key holds ``field == value``."""
    text = str(value)

    def match(message: RawMessage) -> bool:
        if message.key is None:
            return False
        doc = json.loads(message.key)
        if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
            doc = doc["payload"]
        return isinstance(doc, dict) and str(doc.get(field)) == text

    return match


def row_has(field: str, value: object) -> Callable[[RawMessage], bool]:
    """Matches change events whose before or after row holds ``field == value``, and the tombstone that
    follows such a delete (same key, null value)."""
    text = str(value)
    keys: set[bytes] = set()

    def match(message: RawMessage) -> bool:
        if message.value is None:
            return message.key is not None and message.key in keys
        doc = json.loads(message.value)
        if isinstance(doc, dict) and "payload" in doc and "schema" in doc:
            doc = doc["payload"]
        rows = [doc.get("before"), doc.get("after")] if isinstance(doc, dict) else []
        hit = any(isinstance(row, dict) and str(row.get(field)) == text for row in rows)
        if hit and message.key is not None:
            keys.add(message.key)
        return hit

    return match


def save_fixtures(directory: Path | None, name: str, messages: list[RawMessage]) -> None:
    """Keep real captured messages as unit-test fixtures (only when a capture folder is given)."""
    if directory is None:
        return
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.json").write_text(json.dumps([m.to_fixture() for m in messages], indent=1) + "\n")


def committed(bootstrap: str, group: str, topic: str, partitions: list[int]) -> dict[int, int]:
    """A group's committed offsets, read without joining the group."""
    from confluent_kafka import TopicPartition

    probe = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = probe.committed([TopicPartition(topic, p) for p in partitions], timeout=10)
        return {tp.partition: int(tp.offset) for tp in found}
    finally:
        probe.close()
