"""What /healthz, /readyz and /metrics answer from: the dependencies' outages (logged once per state change),
the work held back, the partitions owned; and librdkafka's own log lines, deduplicated."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from confluent_kafka import KafkaError

from consumer.config import ConfigurationError, RuntimeSettings

log = logging.getLogger("allocguard.runtime")


class Outage:
    """One dependency's availability, logged once per state change: down (with the reason), still down every
    ``remind_s``, back (with how long it took). Counted in ``allocguard_dependency_outages_total``."""

    def __init__(self, name: str, count: Callable[[], None], remind_s: float = 30.0) -> None:
        self.name = name
        self._count = count
        self._remind_s = remind_s
        self._lock = threading.Lock()
        self._since: float | None = None
        self._told = 0.0
        self.reason: str | None = None

    def down(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.reason = reason
            if self._since is None:
                self._since = self._told = now
                self._count()
                log.warning("%s unavailable: %s", self.name, reason)
            elif now - self._told >= self._remind_s:
                self._told = now
                log.warning("%s still unavailable after %.0fs: %s", self.name, now - self._since, reason)

    @property
    def is_down(self) -> bool:
        return self._since is not None

    def up(self) -> bool:
        """Mark the dependency available; True when it was down until now (the moment to resume work)."""
        with self._lock:
            since = self._since
            if since is not None:
                log.info("%s back after %.1fs", self.name, time.monotonic() - since)
            self._since = None
            self.reason = None
            return since is not None


class _Dedupe(logging.Filter):
    """librdkafka repeats itself while a broker is away (a FAIL line per reconnect attempt): let one line of a
    kind through per ``window_s``."""

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self._window = window_s
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = "".join(ch for ch in record.getMessage()[:80] if not ch.isdigit())
        now = time.monotonic()
        if now - self._seen.get(kind, -self._window) < self._window:
            return False
        self._seen[kind] = now
        if len(self._seen) > 1000:
            self._seen.clear()
        return True


#: librdkafka's own log lines, through Python logging (level-mapped, JSON with --log-format json), deduplicated
kafka_log = logging.getLogger("allocguard.kafka")
kafka_log.addFilter(_Dedupe())

#: librdkafka errors that mean "the brokers cannot be reached right now": transient, never fatal
_UNREACHABLE = {
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError._RESOLVE,
    KafkaError._TIMED_OUT,
    KafkaError._MSG_TIMED_OUT,
}


@dataclass
class Health:
    """State the loop, the workers and the database probe keep; /readyz answers from it without blocking."""

    assigned: set[tuple[str, int]] = field(default_factory=set)
    last_loop: float = field(default_factory=time.monotonic)
    #: work held back by an infrastructure failure: key → reason (privilege, missing object, database down)
    degraded: dict[str, str] = field(default_factory=dict)
    #: the dependencies, as the probes and the Kafka callbacks see them
    database: Outage | None = None
    kafka: Outage | None = None
    #: events taken and not yet finished (the loop refreshes it every turn)
    in_flight: int = 0
    #: dependencies the start-up waits for: name → what the check said
    waiting: dict[str, str] = field(default_factory=dict)
    #: partitions whose lost records are being backfilled: "topic[partition]" → what was lost
    gaps: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def degrade(self, key: str, reason: str) -> bool:
        """Record that ``key``'s work is held back; True when this reason is new (log state changes only)."""
        with self.lock:
            new = reason not in self.degraded.values()
            self.degraded[key] = reason
            return new

    def recover(self, key: str) -> bool:
        """``key``'s work went through; True when nothing is held back any more."""
        with self.lock:
            if self.degraded.pop(key, None) is None:
                return False
            return not self.degraded

    def reasons(self) -> list[str]:
        with self.lock:
            found = sorted(set(self.degraded.values()))
            found += [f"waiting for {name}: {detail}" for name, detail in sorted(self.waiting.items())]
            found += [detail for _, detail in sorted(self.gaps.items())]
        for outage in (self.database, self.kafka):
            if outage is not None and outage.reason:
                found.append(f"{outage.name}: {outage.reason}")
        return found

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        reasons = self.reasons()
        ready = bool(self.assigned) and not reasons
        partitions = sorted(f"{topic}[{partition}]" for topic, partition in set(self.assigned))
        return ready, {
            "ready": ready,
            "kafka_assigned": len(partitions),
            "partitions": partitions,
            "in_flight": self.in_flight,
            "reasons": reasons,
        }


def serve_health(settings: RuntimeSettings, health: Health, exposition: Callable[[], bytes]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/healthz":
                alive = time.monotonic() - health.last_loop < 30
                self._reply(200 if alive else 503, {"alive": alive})
            elif self.path == "/readyz":
                ready, doc = health.readiness()
                self._reply(200 if ready else 503, doc)
            elif self.path == "/metrics":
                body = exposition()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._reply(404, {"error": "not found"})

        def _reply(self, status: int, doc: dict[str, Any]) -> None:
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def handle(self) -> None:
            # the probe gave up before the answer: nothing to tell it, nothing to log
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                super().handle()

        def log_message(self, format: str, *args: Any) -> None:
            return

    try:
        server = ThreadingHTTPServer((settings.health_host, settings.health_port), Handler)
    except OSError as exc:
        raise ConfigurationError(
            f"the health port {settings.health_host}:{settings.health_port} cannot be served ({exc.strerror}): "
            "choose another with ALLOCGUARD_HEALTH_PORT or --health-port"
        ) from None
    threading.Thread(target=server.serve_forever, name="allocguard-health", daemon=True).start()
    return server
