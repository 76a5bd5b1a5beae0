"""The runtime's clients: how the Kafka consumer and the dead-letter producer are configured (a refused property is
a configuration error), the admin client that reads topic ids, and the database pool."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicCollection
from confluent_kafka.admin import AdminClient
from psycopg_pool import ConnectionPool

from consumer.config import ConfigurationError, RuntimeSettings
from consumer.runtime.health import kafka_log
from consumer.telemetry import TracedConnection, TracedCursor
from handlers import store

_Client = TypeVar("_Client", Consumer, Producer)

#: the pool's reconnection attempts for a lost connection stop after this long (the next is the probe's)
_RECONNECT_GIVE_UP_S = 2.0


def group_protocol(given: dict[str, str]) -> dict[str, str | int]:
    """The consumer group protocol and what it needs. KIP-848's ``consumer`` protocol (the default; Kafka ≥ 4.0):
    a member keeps its partitions through a broker outage shorter than the group's session timeout, and one whose
    session did expire rejoins with its own member id and is assigned at once — the classic protocol lost the
    partitions 6 s into an outage, and the coordinator, back, waited out the old membership (≈ 6 s) before
    assigning them again. Its session timeout and heartbeat are the broker's (``group.consumer.session.timeout.ms``,
    45 s by default; per group: ``consumer.session.timeout.ms``). ``group.protocol=classic`` (brokers before 4.0)
    gets cooperative-sticky assignment and a 6 s session (the broker's minimum), overridable."""
    if given.get("group.protocol", "consumer").lower() == "consumer":
        return {"group.protocol": "consumer"}
    return {
        "partition.assignment.strategy": "cooperative-sticky",
        "session.timeout.ms": 6000,
        "heartbeat.interval.ms": 1000,
    }


def base_config(settings: RuntimeSettings) -> dict[str, Any]:
    # back from a broker outage within a second of the broker (librdkafka's default backoff grows to 10 s);
    # keepalives on the broker connections (a silent peer is otherwise found only by socket.timeout.ms, 60 s, on a
    # request in flight: an idle fetch connection behind a NAT or a partition would wait for the kernel)
    return {
        "bootstrap.servers": settings.resolved_bootstrap(),
        "reconnect.backoff.max.ms": 1000,
        "socket.keepalive.enable": True,
        **settings.librdkafka(),
    }


def consumer_config(settings: RuntimeSettings, on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
    return {
        **base_config(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.commit.interval.ms": 1000,
        # never jump on its own (librdkafka's fallback would skip to the end of a partition whose committed
        # offset retention deleted): Partitions positions every partition and handles a reset
        "auto.offset.reset": "error",
        "fetch.wait.max.ms": 10,
        # a backlog must not starve the loop: librdkafka's default waits 1 s before refilling the queue
        "fetch.queue.backoff.ms": 10,
        # the prefetched messages waiting for the loop (librdkafka's default is 64 MB): with a loop slower than the
        # broker (a backlog of hold announcements), the queue stays full, and that is resident memory. 16 MB:
        # peak RSS of `run` 137 -> 114 MB (healthy) and 143 -> 124 MB (storm) against 32 MB, rates within the
        # runs' spread (bench.throughput, 300k messages, two interleaved runs each)
        "queued.max.messages.kbytes": 16384,
        **group_protocol(settings.librdkafka()),
        **({"group.instance.id": settings.instance_id} if settings.instance_id else {}),
        **settings.librdkafka(),
        "error_cb": on_error,
        "logger": kafka_log,
    }


def producer_config(settings: RuntimeSettings, on_error: Callable[[KafkaError], None]) -> dict[str, Any]:
    # the DLQ is rare traffic: one message per batch, so a copy the topic refuses as too large (the limit applies
    # to the whole batch) never takes its neighbours down with it
    return {
        **base_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 1,
        "error_cb": on_error,
        "logger": kafka_log,
    }


def topic_ids(config: dict[str, Any]) -> Callable[[list[str]], dict[str, str]]:
    """Topic name → id (Kafka's topic UUID) for the topics the broker describes, by one admin client made on first
    use; a topic the broker does not describe (gone, not yet created, not authorised) is left out."""
    admins: list[AdminClient] = []

    def describe(topics: list[str]) -> dict[str, str]:
        if not admins:
            admins.append(AdminClient(cast(dict[str, Any], {**config, "logger": kafka_log})))
        ids: dict[str, str] = {}
        for name, future in admins[0].describe_topics(TopicCollection(topics), request_timeout=5).items():
            try:
                ids[name] = str(future.result().topic_id)
            except KafkaException:
                continue
        return ids

    return describe


def client(kind: Callable[[dict[str, Any]], _Client], config: dict[str, Any]) -> _Client:
    """A Kafka client; a property librdkafka refuses (ALLOCGUARD_KAFKA_CONFIG) is a configuration error."""
    try:
        return kind(config)
    except KafkaException as exc:
        error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
        reason = error.str() if error is not None else str(exc)
        if "group.protocol=consumer" in reason:
            reason += ' (allocguard uses KIP-848\'s consumer protocol; "group.protocol": "classic" for the classic one)'
        raise ConfigurationError(f"ALLOCGUARD_KAFKA_CONFIG: {reason}") from None


def header_list(message: Message) -> list[tuple[str, bytes]]:
    headers = message.headers() or []
    pairs = headers.items() if isinstance(headers, dict) else headers
    return [(str(name), value if isinstance(value, bytes) else str(value or "").encode()) for name, value in pairs]


def connection_pool(settings: RuntimeSettings) -> ConnectionPool[TracedConnection]:
    """The workers' pool, opened by the runtime once the preflight passed."""
    return ConnectionPool(
        settings.resolved_dsn(),
        min_size=1,
        max_size=settings.workers + 3,  # + the probe, the wake-ups and the loop's batched hold writes
        kwargs={
            "autocommit": True,
            "connect_timeout": 5,
            "cursor_factory": TracedCursor,
            **settings.pg_connect_kwargs(),
        },
        connection_class=TracedConnection,
        # give up a reconnection after a short while instead of backing off for minutes (1, 2, 4, 8, 16 s…):
        # the probe sees the database back within a second and starts a fresh attempt (RideOut.back)
        reconnect_timeout=_RECONNECT_GIVE_UP_S,
        configure=functools.partial(
            store.configure, generic_plans=settings.pg_generic_plans and settings.pg_prepare_threshold is not None
        ),
        open=False,
        name="allocguard",
    )
