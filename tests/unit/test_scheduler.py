"""The key-ordered scheduler: one key's work in order, other keys concurrently, and a stop that starts nothing new."""

from __future__ import annotations

import gc
import threading
import time

from consumer.runtime.routing import poll_batches_gc
from consumer.runtime.scheduler import KeyedScheduler, SignalBatches
from consumer.runtime.work import Event, WakeUp, Work


def wait_until(what: str, check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what} within {timeout}s"
        time.sleep(0.005)  # poll


def work(key: str, offset: int, body: object) -> Event:
    return Event(topic="t", partition=0, offset=offset, key=key, run=body)  # type: ignore[arg-type]


def offset_of(finished: Work) -> int:
    assert isinstance(finished, Event)
    return finished.offset


def test_one_key_in_order_other_keys_alongside() -> None:
    finished: list[int] = []
    ran: list[tuple[str, int]] = []
    gate = threading.Event()
    scheduler = KeyedScheduler(4, lambda w: finished.append(offset_of(w)))

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


def test_a_keys_next_work_goes_on_in_the_same_thread_unless_other_work_waits_its_turn() -> None:
    """The events queued behind a booking's work (a storm's dozen behind its incident) go on in the thread that
    ran it — no other thread woken for each — while work already waiting for a thread keeps its turn."""
    threads: dict[tuple[str, int], int] = {}
    ran: list[tuple[str, int]] = []
    gate = threading.Event()

    def step(key: str, offset: int, block: bool = False) -> Work:
        def body() -> None:
            if block:
                gate.wait(5)
            threads[(key, offset)] = threading.get_ident()
            ran.append((key, offset))

        return work(key, offset, body)

    scheduler = KeyedScheduler(4, lambda w: None)
    scheduler.submit(step("a", 1, block=True))
    for offset in range(2, 12):
        scheduler.submit(step("a", offset))
    woken: list[int] = []
    notify = scheduler._wake.notify

    def counted(n: int = 1) -> None:
        woken.append(n)
        notify(n)

    scheduler._wake.notify = counted  # type: ignore[method-assign]
    gate.set()
    wait_until("a's work finished", lambda: scheduler.busy() == 0)
    assert woken == [], "a thread was woken for each queued event"
    assert len({threads[("a", o)] for o in range(1, 12)}) == 1, "one thread ran the key's queued work"
    assert [o for _, o in ran] == list(range(1, 12))
    scheduler.shutdown()

    gate.clear()
    ran.clear()
    alone = KeyedScheduler(1, lambda w: None)
    alone.submit(step("a", 1, block=True))
    alone.submit(step("a", 2))
    alone.submit(step("b", 3))  # ready for a thread before a's second event is
    gate.set()
    wait_until("all finished", lambda: alone.busy() == 0)
    assert ran == [("a", 1), ("b", 3), ("a", 2)], "b waited for a thread first: it goes first"
    alone.shutdown()


def test_shutdown_starts_nothing_new_and_does_not_wait_for_it() -> None:
    """Work queued behind a running key, or not yet picked up, is dropped at stop: busy() falls to 0 as soon as the
    running work ends (before the fix, it waited out the shutdown budget: 15 s of a 30 s one)."""
    finished: list[int] = []
    ran: list[int] = []
    running = threading.Event()
    gate = threading.Event()
    scheduler = KeyedScheduler(1, lambda w: finished.append(offset_of(w)))

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

        return WakeUp(key=key, run=body)

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
    scheduler.submit(WakeUp(key="k", run=lambda: (gate.wait(5), ran.append(1))))  # type: ignore[arg-type,func-returns-value]

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


# ---- signal batches ----------------------------------------------------------------------------------------


class Recorder:
    """A batch handler that records each batch; the first batch can be held until released."""

    def __init__(self, hold_first: bool = False, fail_first: bool = False) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        if not hold_first:
            self.release.set()
        self.fail_first = fail_first

    def __call__(self, batch: list[tuple[str, int]]) -> None:
        self.entered.set()
        self.release.wait(5)
        self.batches.append(batch)
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("a bug in the handler")


def batcher(recorder: Recorder, limit: int = 500) -> SignalBatches[tuple[str, int]]:
    return SignalBatches(recorder, lambda item: item[0], limit=limit)


def test_what_queues_while_a_batch_runs_is_the_next_batch_with_each_keys_signals_in_order() -> None:
    recorder = Recorder(hold_first=True)
    batches = batcher(recorder)
    assert batches.offer("x", ("x", 0), True)
    assert recorder.entered.wait(5)
    for item in (("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)):
        assert batches.offer(item[0], item, True)
    recorder.release.set()
    wait_until("two batches", lambda: len(recorder.batches) == 2)
    assert recorder.batches == [[("x", 0)], [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("a", 5), ("b", 6)]], (
        "arrival order, a booking's later signals with its first (a storm's dozen events per booking took a dozen"
        " batches when a batch held each key once)"
    )
    wait_until("idle", lambda: not batches.busy())
    assert not batches.has("a")
    batches.close()


def test_what_the_handler_holds_back_comes_first_in_the_next_batch_and_keeps_its_key() -> None:
    seen: list[list[tuple[str, int]]] = []
    first, release = threading.Event(), threading.Event()

    def handle(batch: list[tuple[str, int]]) -> list[tuple[str, int]]:
        seen.append(batch)
        if len(seen) == 1:  # holds the thread while the next batch queues
            assert first.wait(5)
        if len(seen) == 2:
            assert release.wait(5)
            return [item for item in batch if item in (("a", 3), ("a", 5))]  # a's later signals: held back
        return []

    batches = SignalBatches(handle, lambda item: item[0])
    assert batches.offer("x", ("x", 0), True)
    wait_until("first batch running", lambda: len(seen) == 1)
    for item in (("a", 1), ("b", 2), ("a", 3), ("a", 5)):
        assert batches.offer(item[0], item, True)
    first.set()
    wait_until("second batch running", lambda: len(seen) == 2)
    assert batches.offer("a", ("a", 7), False), "queued here (its key is in the running batch): behind it"
    assert batches.offer("c", ("c", 8), True)
    release.set()
    wait_until("third batch", lambda: len(seen) == 3)
    assert seen[1:] == [[("a", 1), ("b", 2), ("a", 3), ("a", 5)], [("a", 3), ("a", 5), ("a", 7), ("c", 8)]], (
        "what was held back goes ahead of what arrived meanwhile, in its order"
    )
    wait_until("idle", lambda: not batches.busy())
    assert not batches.has("a"), "every signal has left: no key stays marked"
    assert not batches.has("b")
    batches.close()


def test_a_batch_holds_at_most_limit_signals() -> None:
    recorder = Recorder(hold_first=True)
    batches = batcher(recorder, limit=2)
    batches.offer("x", ("x", 0), True)
    assert recorder.entered.wait(5)
    for n in range(5):
        batches.offer(f"k{n}", (f"k{n}", n), True)
    recorder.release.set()
    wait_until("all handled", lambda: sum(len(b) for b in recorder.batches) == 6)
    assert [len(b) for b in recorder.batches] == [1, 2, 2, 1]
    batches.close()


def test_a_key_held_elsewhere_is_refused_unless_it_is_queued_here() -> None:
    recorder = Recorder(hold_first=True)
    batches = batcher(recorder)
    assert not batches.offer("a", ("a", 1), False), "the key has work in flight elsewhere: not batched"
    assert batches.offer("a", ("a", 1), True)
    assert recorder.entered.wait(5)
    assert batches.offer("a", ("a", 2), False), "in the running batch: it goes behind, whatever free says"
    recorder.release.set()
    wait_until("both handled", lambda: len(recorder.batches) == 2)
    assert recorder.batches == [[("a", 1)], [("a", 2)]]
    batches.close()


def test_wait_clear_returns_once_the_keys_batch_is_handled_or_at_stop() -> None:
    recorder = Recorder(hold_first=True)
    batches = batcher(recorder)
    batches.offer("a", ("a", 1), True)
    stop = threading.Event()
    assert recorder.entered.wait(5)
    assert batches.wait_clear("b", stop), "a key with nothing queued is clear at once"
    cleared: list[bool] = []
    waiter = threading.Thread(target=lambda: cleared.append(batches.wait_clear("a", stop)))
    waiter.start()
    waiter.join(timeout=0.05)
    assert waiter.is_alive(), "still waiting while the key's batch runs"
    assert not cleared
    recorder.release.set()
    waiter.join(5)
    assert cleared == [True]
    assert recorder.batches == [[("a", 1)]], "it returned after the batch was handled"

    recorder2 = Recorder(hold_first=True)
    held = batcher(recorder2)
    held.offer("a", ("a", 1), True)
    stop.set()
    assert held.wait_clear("a", stop) is False, "stopping: the caller leaves its event in flight"
    recorder2.release.set()
    held.close()
    batches.close()


def test_a_failing_handler_does_not_stop_the_thread_or_keep_its_keys() -> None:
    recorder = Recorder(fail_first=True)
    batches = batcher(recorder)
    batches.offer("a", ("a", 1), True)
    wait_until("first batch", lambda: len(recorder.batches) == 1)
    assert batches.wait_clear("a", threading.Event())
    assert batches.offer("a", ("a", 2), True)
    wait_until("second batch", lambda: len(recorder.batches) == 2)
    batches.close()


def test_close_starts_no_new_batch() -> None:
    recorder = Recorder(hold_first=True)
    batches = batcher(recorder)
    batches.offer("a", ("a", 1), True)
    assert recorder.entered.wait(5)
    batches.offer("b", ("b", 2), True)
    batches.close()
    assert batches.busy(), "the running batch finishes"
    assert not batches.offer("c", ("c", 3), True), "closed: nothing new is queued"
    recorder.release.set()
    batches._thread.join(5)
    assert not batches._thread.is_alive(), "the batch thread ends once its running batch has"
    assert recorder.batches == [[("a", 1)]], "what was queued never starts (its events stay uncommitted)"


def test_a_lingering_thread_gathers_what_arrives_meanwhile_into_one_batch() -> None:
    recorder = Recorder()
    batches = SignalBatches(recorder, lambda item: item[0], linger_s=0.5)
    started = time.monotonic()
    for n in range(5):
        assert batches.offer(f"k{n}", (f"k{n}", n), True)
    wait_until("handled", lambda: len(recorder.batches) == 1)
    assert time.monotonic() - started >= 0.5, "the batch was taken before the linger ended"
    assert recorder.batches == [[(f"k{n}", n) for n in range(5)]], "one batch, in arrival order"
    wait_until("idle", lambda: not batches.busy())
    batches.close()


def test_a_full_batch_ends_the_linger_and_close_ends_it_without_a_batch() -> None:
    recorder = Recorder()
    batches = SignalBatches(recorder, lambda item: item[0], limit=3, linger_s=60)
    batches.offer("k0", ("k0", 0), True)
    # woken by that first signal, the thread is lingering (it cleared the flag under the lock it waits on)
    wait_until("lingering", lambda: not batches._idle)
    for n in (1, 2):
        batches.offer(f"k{n}", (f"k{n}", n), True)
    wait_until("a full batch handled at once", lambda: len(recorder.batches) == 1, timeout=5)
    assert recorder.batches == [[("k0", 0), ("k1", 1), ("k2", 2)]]

    batches.offer("late", ("late", 3), True)
    batches.close()
    batches._thread.join(5)
    assert not batches._thread.is_alive(), "closing ends the linger"
    assert len(recorder.batches) == 1, "the lingering batch never starts (its event stays uncommitted)"


# ---- the collector while loops run ------------------------------------------------------------------------


def test_loops_set_the_collector_for_poll_batches_and_the_last_to_end_restores_it() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    with poll_batches_gc(gen0=12_345):
        assert gc.get_threshold() == (12_345, *before[1:])
        assert gc.get_freeze_count() > frozen, "what existed before the loop is frozen"
        with poll_batches_gc(gen0=12_345):  # a second loop in the same process (a test, a bench)
            pass
        assert gc.get_threshold()[0] == 12_345, "the first loop still runs: not restored under it"
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_an_error_in_the_loop_restores_the_collector() -> None:
    before = gc.get_threshold()
    try:
        with poll_batches_gc():
            raise RuntimeError("the loop failed")
    except RuntimeError:
        pass
    assert gc.get_threshold() == before
