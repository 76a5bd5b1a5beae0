"""The fetch watch's judgement (consumer/runtime/stalls.py), on a clock of its own: a position that stands still
while the log goes on is a stall — first its fetch is restarted, one period later the member rejoins; a position
that moves, or a log that ends there (an idle partition), is not."""

from __future__ import annotations

from consumer.runtime.stalls import FetchWatch

P0, P1 = ("t", 0), ("t", 1)


def test_a_still_position_behind_the_log_end_restarts_then_rejoins() -> None:
    watch = FetchWatch(stall_s=10.0)
    assert watch.judge({P0: 5}, now=0.0) == ([], [])
    assert watch.judge({P0: 5}, now=9.0) == ([], []), "not still long enough"
    assert watch.suspects == {}
    assert watch.judge({P0: 5}, now=10.0) == ([], []), "its end is not read yet"
    assert watch.suspects == {P0: 5}, "the probe is asked for its end"
    watch.ends = {P0: 8}
    assert watch.judge({P0: 5}, now=11.0) == ([P0], [])
    assert watch.judge({P0: 5}, now=12.0) == ([], []), "restarted once, then given a period"
    assert watch.judge({P0: 5}, now=21.0) == ([], [P0])
    assert watch.judge({P0: 5}, now=22.0) == ([], []), "rejoined once a period at most"
    assert watch.judge({P0: 5}, now=31.0) == ([], [P0])


def test_an_idle_partition_is_left_alone() -> None:
    watch = FetchWatch(stall_s=10.0)
    watch.judge({P0: 5, P1: 7}, now=0.0)
    watch.ends = {P0: 5, P1: 7}
    for now in (10.0, 20.0, 60.0):
        assert watch.judge({P0: 5, P1: 7}, now=now) == ([], [])
    assert watch.suspects == {P0: 5, P1: 7}, "their ends are read again: traffic may come"


def test_a_moving_position_starts_the_clock_again() -> None:
    watch = FetchWatch(stall_s=10.0)
    watch.judge({P0: 5}, now=0.0)
    watch.ends = {P0: 100}
    assert watch.judge({P0: 5}, now=10.0) == ([P0], [])
    assert watch.judge({P0: 6}, now=15.0) == ([], []), "the restart helped"
    assert watch.suspects == {}
    assert watch.judge({P0: 6}, now=24.0) == ([], [])
    assert watch.judge({P0: 6}, now=25.0) == ([P0], []), "a new stall is restarted first, not rejoined"


def test_only_the_stalled_partition_is_named_and_a_reset_forgets() -> None:
    watch = FetchWatch(stall_s=10.0)
    watch.judge({P0: 5, P1: 7}, now=0.0)
    watch.ends = {P0: 9, P1: 7}
    assert watch.judge({P0: 5, P1: 7}, now=10.0) == ([P0], [])
    watch.reset()
    assert (watch.suspects, watch.ends) == ({}, {})
    assert watch.judge({P0: 5, P1: 7}, now=15.0) == ([], []), "paused or the broker away: the clocks start again"
    watch.ends = {P0: 9}
    assert watch.judge({P0: 5}, now=25.0) == ([P0], []), "P1, revoked, is forgotten"
    assert watch.judge({P0: 5, P1: 7}, now=26.0) == ([], []), "P1 assigned again: its clock starts now"
