"""What the runtime's threads hand each other, one type per kind, and the runtime's own errors.

- :class:`Event`: a platform event's work (a signal to handle, a change to check). It has a Kafka offset, which
  completes when the work is done; a handler error sends the message to the dead-letter topic first.
- :class:`WakeUp`: work no event carries — a waiting incident planned again, a prevention grace ended, a backfilled
  event re-read from the database. No offset; it runs in the scheduler's background lane.
- :class:`BatchDone`: events the batch thread settled together; the loop completes their offsets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from confluent_kafka import Message
from opentelemetry.trace import Span


class Abandoned(RuntimeError):
    """Work given up because the process is stopping: no verdict, no dead letter, no offset."""


class FatalRuntimeError(RuntimeError):
    """Kafka or the database failed in a way riding it out cannot fix: exit non-zero, let the orchestrator
    restart us."""

    retryable = False


@dataclass(kw_only=True)
class Work:
    """Something the keyed scheduler runs: in order with the other work of ``key``, concurrently with other keys."""

    key: str
    run: Callable[[], None]
    #: set by the worker when ``run`` raised: the loop decides what it means
    error: BaseException | None = None
    span: Span | None = None
    #: background work runs after live work, on a share of the workers
    background: ClassVar[bool] = False


@dataclass(kw_only=True)
class Event(Work):
    """A platform event's work: its offset completes when it is done (a dead letter first, if it failed)."""

    topic: str
    partition: int
    offset: int
    message: Message | None = None
    #: its offset was handed to another owner (the folds) that completes it
    handed_over: bool = False


@dataclass(kw_only=True)
class WakeUp(Work):
    """Work with no event behind it (a due re-plan, a grace that ended, a backfilled event): no offset."""

    background: ClassVar[bool] = True


@dataclass
class BatchDone:
    """Events settled together by the batch thread: the loop completes each offset."""

    events: list[tuple[str, int, int]] = field(default_factory=list)


#: what finished work hands back to the loop
Completion = Work | BatchDone
