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


def test_live_work_starts_before_a_backlog_of_background_re_plans() -> None:
    """A thousand bookings backing off (their re-plans queued) do not delay a new incident: it starts on the next
    free worker, ahead of them, and the re-plans never take more than their share of the workers."""
    gate = threading.Event()
    running: list[str] = []
    most = [0]
    lock = threading.Lock()
    scheduler = KeyedScheduler(4, lambda w: None, background_share=0.5)

    def replan(key: str) -> Work:
        def body() -> None:
            with lock:
                running.append(key)
                most[0] = max(most[0], sum(1 for k in running if k.startswith("bg")))
            gate.wait(5)
            with lock:
                running.remove(key)

        return Work("t", 0, -1, key, body, background=True)

    for n in range(1000):
        scheduler.submit(replan(f"bg{n}"))
    wait_until("two re-plans running", lambda: len(running) == 2)
    started = threading.Event()
    scheduler.submit(work("live", 1, started.set))
    assert started.wait(2), "the new incident waited behind the backlog"
    assert most[0] == 2, "background work stays within its share of the workers"
    gate.set()
    wait_until("the backlog done", lambda: scheduler.busy() == 0, timeout=20)
    scheduler.shutdown()


def test_a_key_stays_in_order_across_lanes() -> None:
    ran: list[int] = []
    gate = threading.Event()
    live_ran = threading.Event()
    scheduler = KeyedScheduler(2, lambda w: None)
    scheduler.submit(Work("t", 0, 1, "k", lambda: (gate.wait(5), ran.append(1)), background=True))  # type: ignore[arg-type,func-returns-value]

    def live() -> None:
        ran.append(2)
        live_ran.set()

    scheduler.submit(work("k", 2, live))  # live, but behind the key's running re-plan
    assert not live_ran.wait(0.05), "the live work started while its key was busy"
    assert ran == []
    gate.set()
    wait_until("both ran", lambda: len(ran) == 2)
    assert ran == [1, 2]
    scheduler.shutdown()
