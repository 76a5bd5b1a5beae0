"""What travels with a commit (consumer/runtime/gaps.py): the handled time and the topic's id; and how a commit made
on a topic since deleted and created again is told (consumer/runtime/topics.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from confluent_kafka import KafkaException, TopicPartition

from consumer.runtime.gaps import Gap, committed_topic_id, handled_at, handled_metadata
from consumer.runtime.topics import Topics

MS = 1_764_000_000_123


def test_time_and_id_round_trip() -> None:
    metadata = handled_metadata(MS, "OWIuSIcPThGxbM9VqX3jpg")
    assert handled_at(metadata) == datetime.fromtimestamp(MS / 1000, UTC)
    assert committed_topic_id(metadata) == "OWIuSIcPThGxbM9VqX3jpg"
    assert committed_topic_id(handled_metadata(MS)) is None
    assert handled_at(handled_metadata(None, "abc")) is None
    assert committed_topic_id(handled_metadata(None, "abc")) == "abc"
    assert handled_metadata(None, None) is None


@pytest.mark.parametrize(
    ("metadata", "time", "topic_id"),
    [
        (f"allocguard:handled_ms={MS}", datetime.fromtimestamp(MS / 1000, UTC), None),  # the previous image's
        ("", None, None),
        (None, None, None),
        ("someone else's", None, None),
        ("allocguard:handled_ms=soon;topic_id=", None, None),
        ("allocguard:topic_id=x;handled_ms=99999999999999999999999", None, "x"),
    ],
)
def test_what_other_commits_read_as(metadata: str | None, time: datetime | None, topic_id: str | None) -> None:
    assert handled_at(metadata) == time
    assert committed_topic_id(metadata) == topic_id


def committed(topic_id: str | None) -> TopicPartition:
    metadata = handled_metadata(MS, topic_id)
    return TopicPartition("t", 0, 3, metadata=metadata) if metadata else TopicPartition("t", 0, 3)


def test_a_commit_on_another_id_is_a_recreated_topic() -> None:
    topics = Topics(lambda names: dict.fromkeys(names, "new"))
    topics.refresh(["t"])
    assert topics.id_of("t") == "new"
    assert topics.recreated(committed("old"))
    assert not topics.recreated(committed("new"))
    assert not topics.recreated(committed(None)), "a commit with no id (the previous image's) is not judged"


def test_no_id_from_the_broker_judges_nothing() -> None:
    def refused(names: list[str]) -> dict[str, str]:
        raise KafkaException("broker away")

    topics = Topics(refused)
    topics.refresh(["t"])
    assert topics.id_of("t") is None
    assert not topics.recreated(committed("old"))


def test_a_recreated_topic_says_so() -> None:
    gap = Gap("t", 0, 3, 0, datetime.fromtimestamp(MS / 1000, UTC), recreated=True)
    assert gap.describe().startswith("records lost in t[0]: the topic was deleted and created again after offset 3")
    assert "reading resumes at offset 0" in gap.describe()
