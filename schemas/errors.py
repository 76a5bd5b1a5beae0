"""The one error a bad CDC message raises: it names where the message came from and what was wrong."""

from __future__ import annotations


class CdcDecodeError(ValueError):
    """A Kafka message that cannot be turned into a typed CDC record.

    ``retryable`` is always False: the same bytes will fail the same way, so the message belongs in the
    dead-letter topic, not in a retry loop.
    """

    retryable = False

    def __init__(
        self,
        *,
        topic: str,
        partition: int | None,
        offset: int | None,
        field: str,
        reason: str,
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.field = field
        self.reason = reason
        super().__init__(f"{topic}[{partition}]@{offset}: field {field!r}: {reason}")

    def as_headers(self) -> list[tuple[str, bytes]]:
        """Kafka headers describing the failure, for a dead-letter copy of the message."""
        return [
            ("allocguard.error.class", type(self).__name__.encode()),
            ("allocguard.error.field", self.field.encode()),
            ("allocguard.error.reason", self.reason.encode()),
            ("allocguard.source.topic", self.topic.encode()),
            ("allocguard.source.partition", str(self.partition).encode()),
            ("allocguard.source.offset", str(self.offset).encode()),
        ]
