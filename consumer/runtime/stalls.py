"""A partition whose fetcher stopped: assigned, not paused, the broker reachable, the log's end past the position
the consumer has given the loop, and that position still for ``fetch_stall_s``. librdkafka sometimes stops
fetching a partition after a broker restart until the consumer is re-created (confluentinc/librdkafka#5153, open;
a CI run here once handled nothing for a minute after one). The watch names such a partition, restarts its fetch
(resume and seek to its position: both do nothing to a healthy partition), and when it is still stalled one period
later, the member leaves and joins its group again.

An idle partition is the usual case of a position that does not move: the log's end tells them apart. The loop
never waits for it — it names the partitions whose position stood still (``suspects``) and the probe thread reads
their ends (``ends``, committed offsets only: an open transaction is not a stall) on its next broker round."""

from __future__ import annotations

Key = tuple[str, int]


class FetchWatch:
    def __init__(self, stall_s: float) -> None:
        self.stall_s = stall_s
        #: per partition: its position and since when it has not moved
        self._still: dict[Key, tuple[int, float]] = {}
        #: per partition: when its fetch was restarted (the rejoin follows one period later)
        self._restarted: dict[Key, float] = {}
        #: the partitions whose ends the probe reads next (written by the loop, replaced whole)
        self.suspects: dict[Key, int] = {}
        #: the ends the probe read for them (written by the probe thread, replaced whole)
        self.ends: dict[Key, int] = {}

    def judge(self, positions: dict[Key, int], now: float) -> tuple[list[Key], list[Key]]:
        """``positions``: the partitions to watch now (the rest are forgotten). Returns the partitions whose fetch
        is to be restarted, and those still stalled one period after that (the member rejoins its group)."""
        restart: list[Key] = []
        rejoin: list[Key] = []
        suspects: dict[Key, int] = {}
        ends = self.ends
        for key, position in positions.items():
            seen = self._still.get(key)
            if seen is None or seen[0] != position:
                self._still[key] = (position, now)
                self._restarted.pop(key, None)
                continue
            if now - seen[1] < self.stall_s:
                continue
            suspects[key] = position
            end = ends.get(key)
            if end is None or end <= position:
                continue  # idle: nothing there to fetch (or its end not read yet)
            restarted = self._restarted.get(key)
            if restarted is None:
                restart.append(key)
                self._restarted[key] = now
            elif now - restarted >= self.stall_s:
                rejoin.append(key)
                self._restarted[key] = now
        for key in [key for key in self._still if key not in positions]:
            del self._still[key]
            self._restarted.pop(key, None)
        self.suspects = suspects
        return restart, rejoin

    def reset(self) -> None:
        """Paused, the broker away, a gap being positioned, a rejoin: every clock starts again."""
        self._still.clear()
        self._restarted.clear()
        self.suspects = {}
        self.ends = {}
