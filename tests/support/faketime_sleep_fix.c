/* Loaded before Debian's libfaketime (0.9.10) by `make unit-future`, for one bug of it.
 *
 * The run fakes the wall clock only (FAKETIME_DONT_FAKE_MONOTONIC=1): with the monotonic clock faked too, every
 * timed wait of Python's threads (sem_clockwait on CLOCK_MONOTONIC, which libfaketime does not intercept) would
 * sleep until the real monotonic clock reached a deadline 400 days away. But with the monotonic clock left alone,
 * libfaketime still shifts the absolute deadline of clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME) — how Python
 * 3.11's time.sleep sleeps — by the fake offset, and the kernel answers EINVAL (libfaketime issue #426).
 *
 * Here a monotonic sleep goes to the kernel unchanged (the clock it is measured on is real); any other clock goes on
 * to libfaketime as before. Nothing else is touched. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);

int clock_nanosleep(clockid_t clock_id, int flags, const struct timespec *request, struct timespec *remain) {
    if (clock_id == CLOCK_MONOTONIC) {
        return syscall(SYS_clock_nanosleep, clock_id, flags, request, remain) == -1 ? errno : 0;
    }
    static clock_nanosleep_fn next;
    if (next == NULL) {
        next = (clock_nanosleep_fn)dlsym(RTLD_NEXT, "clock_nanosleep");
    }
    return next(clock_id, flags, request, remain);
}
