"""The replay's read-ahead: a reader thread feeds the caller in order, hands its errors over and stops with it;
started mid-way (:class:`ReadAhead`), the order holds across the switch."""

from __future__ import annotations

import threading
from collections.abc import Generator, Iterator

import pytest

from consumer.operations.replay import Raw, ReadAhead, read_ahead


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


@pytest.mark.parametrize("switch_at", [None, 0, 1, 999, 2500, 4999])
def test_a_read_ahead_started_mid_way_keeps_the_order(switch_at: int | None) -> None:
    ahead = ReadAhead(raws(5000))
    seen: list[int] = []
    for raw in ahead:
        seen.append(raw.offset)
        if raw.offset == switch_at:
            ahead.start()
            ahead.start()  # once
    assert seen == list(range(5000))


def test_a_reader_error_after_the_switch_reaches_the_caller() -> None:
    ahead = ReadAhead(raws(100, fail_at=30))
    seen: list[int] = []

    def drain() -> None:
        for raw in ahead:
            seen.append(raw.offset)
            if raw.offset == 10:
                ahead.start()

    with pytest.raises(ValueError, match="broken at 30"):
        drain()
    assert seen == list(range(30))


@pytest.mark.parametrize("switched", [False, True])
def test_stopping_early_closes_the_source_switched_or_not(switched: bool) -> None:
    closed = threading.Event()
    ahead = ReadAhead(raws(1_000_000, closed=closed))
    items = iter(ahead)
    assert next(items).offset == 0
    if switched:
        ahead.start()
        assert next(items).offset == 1
    items.close()  # type: ignore[attr-defined]
    assert closed.wait(5), "the source was left open"
    if not switched:
        assert not any(t.name == "allocguard-replay-reader" and t.is_alive() for t in threading.enumerate())
