"""Shutdown's one budget (``shutdown_timeout_s``, measured from the stop request) and the bounded close of what can
block on a dead broker, database or collector."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaError, KafkaException

log = logging.getLogger("allocguard.runtime")


class Budget:
    def __init__(self, began: float, seconds: float) -> None:
        self.began = began
        self._end = began + seconds * 0.85  # the rest is the interpreter's own exit

    def left(self, share: float = 1.0) -> float:
        """A share of what is left (never nothing: a step always gets a moment)."""
        return max(0.05, (self._end - time.monotonic()) * share)


def close_within(budget: Budget, steps: list[tuple[str, Callable[[], None]]]) -> None:
    """Each step on its own daemon thread, waited for at most half of what is left; one that hangs is left."""
    for name, step in steps:
        thread = threading.Thread(target=step, name=f"allocguard-close-{name}", daemon=True)
        thread.start()
        thread.join(budget.left(0.5))
        if thread.is_alive():
            log.warning("closing %s did not finish within the shutdown budget; leaving it", name)


def commit_and_close(consumer: Consumer) -> None:
    """The final commit (of the offsets stored), then leave the group."""
    try:
        consumer.commit(asynchronous=False)
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError._NO_OFFSET:
            log.warning("final commit failed: %s", exc)
    consumer.close()
