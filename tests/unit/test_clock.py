"""The future-clock run (``make unit-future``) really runs in the future, and the test helpers build times from now."""

from __future__ import annotations

import ctypes
import os
import platform
import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clock import hold_window, iso_from_now


class Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def kernel_time() -> float:
    """CLOCK_REALTIME straight from the kernel (a raw syscall: no preloaded library sees it)."""
    number = {"x86_64": 228, "aarch64": 113}[platform.machine()]  # SYS_clock_gettime
    spec = Timespec()
    assert ctypes.CDLL(None, use_errno=True).syscall(number, 0, ctypes.byref(spec)) == 0
    return float(spec.tv_sec) + float(spec.tv_nsec) / 1e9


def test_the_process_clock_is_ahead_by_the_days_the_run_says() -> None:
    """``make unit-future`` says 400 days; every other run, none. A faketime that did nothing would prove nothing."""
    ahead = float(os.environ.get("ALLOCGUARD_CLOCK_AHEAD_DAYS", "0"))
    skew = time.time() - kernel_time()
    assert skew == pytest.approx(ahead * 86_400, abs=60), f"the clock is {skew / 86_400:.2f} days ahead"
    started = time.monotonic()
    time.sleep(0.01)  # poll: the sleep itself is what is tested (libfaketime's absolute-deadline bug)
    assert 0.005 < time.monotonic() - started < 5


def test_times_are_relative_to_now() -> None:
    now = datetime.now(UTC)
    start, end = (datetime.fromisoformat(t) for t in hold_window())
    assert now + timedelta(hours=23) <= start <= now + timedelta(hours=24)
    assert end - start == timedelta(hours=2)
    assert abs(datetime.fromisoformat(iso_from_now(minutes=-5)) - (now - timedelta(minutes=5))) < timedelta(seconds=5)
    assert iso_from_now().endswith("Z")
