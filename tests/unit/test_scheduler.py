"""The key-ordered scheduler: one key's work in order, other keys concurrently, and a stop that starts nothing new."""

from __future__ import annotations

import threading
import time

from consumer.runtime import KeyedScheduler, Work


def wait_until(what: str, check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.005)  # poll


def work(key: str, offset: int, body: object) -> Work:
    return Work("t", 0, offset, key, body)  # type: ignore[arg-type]


def test_one_key_in_order_other_keys_alongside() -> None:
    finished: list[int] = []
    ran: list[tuple[str, int]] = []
    gate = threading.Event()
    scheduler = KeyedScheduler(4, lambda w: finished.append(w.offset))

    def step(key: str, offset: int, block: bool = False) -> Work:
        def body() -> None:
            if block:
                gate.wait(5)
            ran.append((key, offset))

        return work(key, offset, body)

    scheduler.submit(step("a", 1, block=True))
    scheduler.submit(step("a", 2))
    scheduler.submit(step("b", 3))
    wait_until("key b ran while key a is blocked", lambda: ("b", 3) in ran)
    assert ("a", 2) not in ran, "a's second event waits for its first"
    gate.set()
    wait_until("everything finished", lambda: scheduler.busy() == 0)
    assert [o for k, o in ran if k == "a"] == [1, 2]
    assert sorted(finished) == [1, 2, 3]
    scheduler.shutdown()


def test_shutdown_starts_nothing_new_and_does_not_wait_for_it() -> None:
    """Work queued behind a running key, or not yet picked up, is dropped at stop: busy() falls to 0 as soon as the
    running work ends (before the fix, it waited out the shutdown budget: 15 s of a 30 s one)."""
    finished: list[int] = []
    ran: list[int] = []
    running = threading.Event()
    gate = threading.Event()
    scheduler = KeyedScheduler(1, lambda w: finished.append(w.offset))

    def blocking() -> None:
        running.set()
        gate.wait(5)
        ran.append(1)

    scheduler.submit(work("a", 1, blocking))
    scheduler.submit(work("a", 2, lambda: ran.append(2)))  # behind its key
    scheduler.submit(work("b", 3, lambda: ran.append(3)))  # in the ready queue, no free worker
    wait_until("the first work running", running.is_set)
    assert scheduler.busy() == 3
    scheduler.shutdown()
    gate.set()
    wait_until("nothing busy", lambda: scheduler.busy() == 0, timeout=2.0)
    assert ran == [1], "only the work that was running when the stop came finished"
    assert finished == [1], "dropped work has no verdict (its offset stays uncommitted)"
