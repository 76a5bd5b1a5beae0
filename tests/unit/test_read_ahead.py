"""The replay's read-ahead: a reader thread feeds the caller in order, hands its errors over and stops with it."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator

import pytest

from consumer.operations.replay import Raw, read_ahead


def raws(count: int, fail_at: int | None = None, closed: threading.Event | None = None) -> Iterator[Raw]:
    try:
        for i in range(count):
            if i == fail_at:
                raise ValueError(f"broken at {i}")
            yield Raw("t", 0, i, 0, None, b"v")
    finally:
        if closed is not None:
            closed.set()


def test_order_is_kept_through_a_full_queue() -> None:
    assert [r.offset for r in read_ahead(raws(5000), depth=7)] == list(range(5000))


def test_a_reader_error_reaches_the_caller_after_what_was_read() -> None:
    seen: list[int] = []

    def drain() -> None:
        for raw in read_ahead(raws(100, fail_at=30), depth=4):
            seen.append(raw.offset)

    with pytest.raises(ValueError, match="broken at 30"):
        drain()
    assert seen == list(range(30))


def test_a_caller_that_stops_early_stops_and_closes_the_source() -> None:
    closed = threading.Event()
    ahead = read_ahead(raws(1_000_000, closed=closed), depth=3)
    assert isinstance(ahead, Generator)
    assert next(ahead).offset == 0
    ahead.close()  # the consumer's close runs in the reader thread, promptly
    assert closed.wait(5), "the source was left open"
