"""The dead-letter writer: a message allocguard cannot handle is copied to the DLQ with the reason, and its offset
completes only once the broker has the copy."""

from __future__ import annotations

import logging
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from opentelemetry import trace
from opentelemetry.trace import Span

from consumer.runtime.clients import header_list
from consumer.runtime.work import FatalRuntimeError
from consumer.telemetry import Metrics, Telemetry
from schemas.errors import CdcDecodeError

log = logging.getLogger("allocguard.runtime")

#: how much of a value a truncated dead-letter copy keeps
TRUNCATE = 64 * 1024

Headers = list[tuple[str, str | bytes | None]]


class DeadLetters:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        telemetry: Telemetry,
        metrics: Metrics,
        *,
        done: Callable[[str, int, int], None],
        fatal: Callable[[FatalRuntimeError], None],
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._telemetry = telemetry
        self._metrics = metrics
        #: the message's offset completes (in the loop: delivery callbacks run in producer.poll)
        self._done = done
        self._fatal = fatal

    def send(self, message: Message, error: CdcDecodeError | BaseException, span: Span | None = None) -> None:
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset() or 0
        if isinstance(error, CdcDecodeError):
            reason: list[tuple[str, bytes]] = error.as_headers()
            log.warning("dead-lettering %s[%s]@%s: %s: %s", topic, partition, offset, error.field, error.reason)
        else:
            reason = [
                ("allocguard.error.class", type(error).__name__.encode()),
                ("allocguard.error.reason", str(error)[:1000].encode()),
                ("allocguard.source.topic", topic.encode()),
                ("allocguard.source.partition", str(partition).encode()),
                ("allocguard.source.offset", str(offset).encode()),
            ]
            where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
            log.error("dead-lettering %s[%s]@%s after a handler error: %r%s", topic, partition, offset, error, where)
        original = header_list(message)
        headers: Headers = [*original, *reason]
        sending = self._telemetry.producer_span(self._topic, span, (topic, partition, offset))
        if span is not None and not any(name == "traceparent" for name, _ in original):
            headers += self._telemetry.traceparent(sending)
        self._produce(
            (topic, partition, offset), message.key(), message.value(), headers, type(error).__name__, sending
        )

    def _produce(
        self,
        where: tuple[str, int, int],
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        error_class: str,
        sending: Span = trace.INVALID_SPAN,
        truncated: bool = False,
    ) -> None:
        """The DLQ copy; the offset completes once the broker has it. A copy the broker (or the client) refuses as
        too large is sent again truncated to 64 KiB with ``allocguard.dlq.truncated``; should even that fail, the
        message is accounted for by a metric and a log line with its coordinates, and the consumer moves on. Any
        other delivery failure is fatal: we would otherwise commit past a message we did not keep."""
        topic, partition, offset = where

        def too_large(reason: object) -> None:
            if not truncated and value is not None:
                log.warning(
                    "dead-letter copy of %s[%s]@%s too large (%s): sent truncated", topic, partition, offset, reason
                )
                marker: Headers = [("allocguard.dlq.truncated", str(len(value)).encode())]
                self._produce(where, key, value[:TRUNCATE], [*headers, *marker], error_class, sending, True)
                return
            log.error(
                "dead-letter copy of %s[%s]@%s refused (%s): counted and skipped", topic, partition, offset, reason
            )
            self._metrics.dlq.add(1, {"topic": topic, "error_class": "unkept"})
            Telemetry.end(sending, RuntimeError(f"dead-letter copy refused: {reason}"))
            self._done(topic, partition, offset)

        def delivered(err: KafkaError | None, _: Message) -> None:
            if err is not None:
                if err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    too_large(err)
                    return
                fatal = FatalRuntimeError(f"could not write to the dead-letter topic: {err}")
                Telemetry.end(sending, fatal)
                self._fatal(fatal)
                return
            self._metrics.dlq.add(1, {"topic": topic, "error_class": error_class})
            Telemetry.end(sending)
            self._done(topic, partition, offset)

        def produce() -> None:
            self._producer.produce(self._topic, key=key, value=value, headers=headers, on_delivery=delivered)

        try:
            produce()
        except KafkaException as exc:
            if exc.args and exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                too_large(exc)
                return
            raise
        except BufferError:
            self._producer.poll(1.0)  # the local queue is full: let deliveries drain, then try once more
            produce()
