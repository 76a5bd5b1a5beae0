"""``run``'s preflight: the checks of ``allocguard check`` before anything starts — a misconfiguration ends the
process, a dependency merely down is waited for."""

from __future__ import annotations

import logging
import threading

from consumer.config import ConfigurationError, RuntimeSettings
from consumer.operations.check import Status, run_checks
from consumer.runtime.health import Health

log = logging.getLogger("allocguard.runtime")


def preflight(settings: RuntimeSettings, health: Health, stop: threading.Event) -> None:
    """A misconfiguration (a grant missing, a wrong connection string) exits 2 with the items and their fixes:
    waiting cannot fix it. A dependency that is merely out of reach — PostgreSQL or the brokers down, no connection
    slot free — is waited for with back-off: one log line per change of what is awaited, ``/readyz`` 503 with the
    reason. Kafka Connect out of reach is reported, not waited for: allocguard reads the topics, not Connect."""
    awaited: frozenset[str] = frozenset()
    delay = 0.5
    while not stop.is_set():
        report = run_checks(settings.check_target(), guest_data=False)
        if report.misconfigured:
            raise ConfigurationError("preflight failed:\n" + "\n".join(item.line() for item in report.misconfigured))
        waiting = [item for item in report.failed if item.unavailable in ("database", "kafka")]
        health.waiting = {str(item.unavailable): f"{item.name}: {item.detail}" for item in waiting}
        now = frozenset(health.waiting)
        if now != awaited:
            for item in waiting:
                log.warning("waiting for %s (not exiting): %s", item.unavailable, item.line())
            if awaited - now:
                log.info("%s available", ", ".join(sorted(awaited - now)))
            awaited = now
        if not waiting:
            for item in report.items:
                (log.info if item.status is Status.OK else log.warning)("check %s", item.line())
            return
        stop.wait(delay)
        delay = min(delay * 2, 2.0)  # a refused connection costs nothing: look again soon
