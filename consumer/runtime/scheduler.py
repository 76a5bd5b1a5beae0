"""Key-ordered work: one booking's work in order, different bookings concurrently (:class:`KeyedScheduler`), and
signals handled many at a time by one thread under a backlog (:class:`SignalBatches`)."""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Generic, TypeVar

from consumer.runtime.work import Work

log = logging.getLogger("allocguard.runtime")

T = TypeVar("T")


class KeyedScheduler:
    """Runs work for one key in submission order, different keys concurrently on ``workers`` threads.

    Two lanes: live work (platform events) always starts first; background work (the delay queue's re-plans of
    waiting incidents) starts only when no live work is ready, and never on more than ``background_share`` of the
    workers — a thousand bookings backing off cannot queue, or crowd out, a new incident.

    The threads are daemons: a worker still inside a slow call when shutdown's budget is spent never holds the
    process open (its work has no verdict and no offset, so the next owner of the partition redoes it)."""

    def __init__(self, workers: int, finished: Callable[[Work], None], background_share: float = 0.25) -> None:
        self._live: deque[Work] = deque()
        self._background: deque[Work] = deque()
        self._background_running = 0
        self._background_limit = max(1, int(workers * background_share))
        self._queues: dict[str, deque[Work]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._finished = finished
        #: submitted and not yet finished (running or waiting behind its key)
        self._busy = 0
        self._closing = False
        self._threads = [
            threading.Thread(target=self._worker, name=f"allocguard-worker-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def busy(self) -> int:
        return self._busy

    def has(self, key: str) -> bool:
        """Whether work for ``key`` is running or waiting (one dict lookup, atomic under the GIL: with the lock
        the answer could change just as soon after it is given)."""
        return key in self._queues

    def submit(self, work: Work) -> None:
        with self._lock:
            if self._closing:  # never starts (no verdict, its offset uncommitted): the next owner redoes it
                return
            self._busy += 1
            waiting = self._queues.get(work.key)
            if waiting is not None:
                waiting.append(work)
                return
            self._queues[work.key] = deque()
            self._ready(work)

    def _ready(self, work: Work) -> None:
        (self._background if work.background else self._live).append(work)
        self._wake.notify()

    def _take(self) -> Work | None:
        """The next work to start (live first), or None once closing; waits while there is none."""
        with self._lock:
            while True:
                if self._closing:
                    return None
                if self._live:
                    return self._live.popleft()
                if self._background and self._background_running < self._background_limit:
                    self._background_running += 1
                    return self._background.popleft()
                self._wake.wait()

    def _worker(self) -> None:
        work = self._take()
        while work is not None:
            try:
                work.run()
            except BaseException as exc:  # recorded on the work item; the loop decides
                work.error = exc
            self._finished(work)
            following: Work | None = None
            with self._lock:
                self._busy -= 1
                if work.background:
                    self._background_running -= 1
                    self._wake.notify()  # a background slot is free
                waiting = self._queues[work.key]
                if waiting and not self._closing:
                    following = waiting.popleft()
                    if following.background or work.background or self._live:
                        self._ready(following)  # its lane's turn (and live work waiting goes first)
                        following = None
                    # else: the key's next live work goes on here at once — no other thread woken for it (a
                    # storm queues a dozen events behind each incident)
                else:  # closing: what waits behind this key never starts (no verdict, no offset)
                    self._busy -= len(waiting)
                    del self._queues[work.key]
            work = following if following is not None else self._take()

    def shutdown(self) -> None:
        """No new work starts — neither what is queued nor what waits behind a running key — and running work
        finishes or is abandoned by the stop flag. Work that never started keeps its offset uncommitted."""
        with self._lock:
            self._closing = True
            for work in (*self._live, *self._background):
                self._busy -= 1 + len(self._queues.pop(work.key, ()))
            self._live.clear()
            self._background.clear()
            self._wake.notify_all()


def linger(changed: threading.Condition, ready: Callable[[], bool], seconds: float) -> None:
    """With ``changed`` held: wait until ``ready()`` or for ``seconds``, whichever comes first (a batch thread's
    linger for a fuller batch: the signals' and the folds')."""
    deadline = time.monotonic() + seconds
    while not ready():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        changed.wait(left)


class SignalBatches(Generic[T]):
    """Signals handled many at a time by one thread, in arrival order, with no wait for the loop.

    The loop offers a signal; the thread takes what has queued meanwhile — in arrival order, at most ``limit``, a
    booking's later signals with its first — and hands it to ``handle``, which returns the signals it holds back
    (a booking's later signals whose first was settled by the batch itself: they need a batch of their own); those
    go back to the front of the queue, in their order, ahead of what arrived meanwhile. Whatever arrives while a
    batch runs (or lingers, below) forms the next batch, so batches grow with the wait for the database. A key
    stays marked from offer until its last signal has left a batch, so a booking's later signal can queue behind
    it (:meth:`offer`) or wait for it (:meth:`wait_clear`): one booking's work stays in order. A batch that never
    ran (closing) leaves its events in flight, uncommitted.

    (A batch took each key's first signal only, leaving the rest queued: a failure storm queues a dozen events per
    booking, so each booking took a dozen batches — each at least a linger long — and the batch thread, not the
    workers or the database, set the storm's pace: measured, ≈ 450 signals queued here throughout a storm.)

    ``linger_s``: once a signal is queued, the thread waits that long for more (or until ``limit`` queued) before
    it takes a batch, and the loop does not wake it for each one: under a backlog, fewer and fuller batches cost
    less per signal in both threads (measured: 10 ms took the batch thread's CPU per signal from ≈ 50 to ≈ 31 µs).
    Only a backlog is offered here (a caught-up stream goes the per-signal way), so only a backlog waits."""

    def __init__(
        self,
        handle: Callable[[list[T]], list[T] | None],
        key_of: Callable[[T], str],
        limit: int = 500,
        linger_s: float = 0.0,
    ) -> None:
        self._handle = handle
        self._key_of = key_of
        self._limit = limit
        self._linger_s = linger_s
        #: the thread waits for a first signal (only then does an offer wake it)
        self._idle = False
        self._queue: deque[T] = deque()
        #: keys queued or in the running batch (how many of each key's signals)
        self._keys: Counter[str] = Counter()
        self._changed = threading.Condition()
        self._running = False
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="allocguard-batches", daemon=True)
        self._thread.start()

    def offer(self, key: str, item: T, free: bool) -> bool:
        """Queue ``item`` when its key is queued already (it goes behind) or ``free`` says nothing else holds the
        key (the caller's own work queue, read before the offer: only this thread adds to it); False otherwise
        (the caller places it the usual way)."""
        with self._changed:
            if self._closing or (not self._keys[key] and not free):
                return False
            self._queue.append(item)
            self._keys[key] += 1
            if self._idle or len(self._queue) == self._limit:
                self._changed.notify_all()
            return True

    def has(self, key: str) -> bool:
        """Whether ``key`` is queued or in the running batch (one dict read, atomic under the GIL)."""
        return bool(self._keys.get(key))

    def wait_clear(self, key: str, stop: threading.Event) -> bool:
        """Until nothing of ``key`` is queued or running; False if ``stop`` is set meanwhile."""
        with self._changed:
            while self._keys[key]:
                if stop.is_set():
                    return False
                self._changed.wait(0.1)
            return True

    def busy(self) -> bool:
        """A batch is running, or one will start."""
        with self._changed:
            return self._running or (bool(self._queue) and not self._closing)

    def close(self) -> None:
        """No new batch starts; the running one finishes."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()

    def _take(self) -> list[T] | None:
        with self._changed:
            self._idle = True
            while not self._queue and not self._closing:
                self._changed.wait()
            self._idle = False
            linger(self._changed, lambda: len(self._queue) >= self._limit or self._closing, self._linger_s)
            if self._closing:
                return None
            queue = self._queue
            batch = [queue.popleft() for _ in range(min(self._limit, len(queue)))]
            self._running = True
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            kept: list[T] = []
            try:
                kept = self._handle(batch) or []
            except Exception:  # the handler's own guard failed too: nothing more to do here than say so
                log.exception("a batch of %d signal(s) failed", len(batch))
            finally:
                with self._changed:
                    held = {id(item) for item in kept}
                    for item in batch:
                        if id(item) in held:
                            continue
                        key = self._key_of(item)
                        self._keys[key] -= 1
                        if not self._keys[key]:
                            del self._keys[key]
                    self._queue.extendleft(reversed(kept))  # ahead of what arrived meanwhile, in their order
                    self._running = False
                    self._changed.notify_all()
