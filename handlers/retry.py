"""Retry the victim's auto-assign, with tenacity: exponential backoff with jitter, bounded attempts and time.

Only transient outcomes are retried (:class:`~handlers.errors.RemediationError` with ``retryable``): a hold
conflict (wait longer), serialization failure / deadlock / lock timeout / lost connection (back off).
A newly appeared blocker (:class:`~handlers.errors.NewBlockerError`) leaves the loop at once: the caller
re-detects and re-plans. A booking that is no longer pending, or has gained tables, stops the retry.

Strategies: ``sql`` calls ``assign_tables_atomic_v2`` with all seven named arguments, then
``apply_booking_state_transition``, in one transaction; ``http`` asks the platform's app to do it. Both are
verified the same way: assignment rows and non-shadow allocations must exist afterwards.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

import psycopg
from pydantic import BaseModel, ConfigDict
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential_jitter

from handlers import platform
from handlers.errors import (
    HoldConflictError,
    InfrastructureError,
    NewBlockerError,
    NotNeededError,
    PermanentAssignError,
    RemediationError,
    TransientDatabaseError,
    VerificationError,
    infrastructure_cause,
)
from schemas.values import TstzRange

Conn = psycopg.Connection[Any]
#: a connection factory usable in ``with``: psycopg.connect(..., autocommit=True) or a pool's .connection
Connect = Callable[[], AbstractContextManager[Conn]]


#: allocguard's idempotency keys start with this: an assignment carrying one is allocguard's own doing
ALLOCGUARD_KEY_PREFIX = "allocguard-"


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)
    max_attempts: int = 5
    #: seconds from the first attempt after which no new attempt starts
    max_total_s: float = 120.0
    initial_wait_s: float = 0.5
    max_wait_s: float = 15.0
    jitter_s: float = 0.5
    #: a hold conflict waits at least this long (holds live for minutes, not milliseconds)
    hold_conflict_wait_s: float = 10.0
    #: … and, deferred, at most this long between re-plans (the wait grows with the incident's age)
    hold_conflict_max_wait_s: float = 60.0
    #: instead of waiting for a hold in a sleeping worker, hand the conflict back: the caller stores when to try
    #: again (the always-on consumer's delay queue: a due time in the database and its wake-up thread)
    defer_hold_conflicts: bool = False
    #: a conflict deferred for longer than this since the incident began is handed to humans
    max_deferral_s: float = 1800.0


@dataclass(frozen=True)
class AssignRequest:
    booking_id: UUID
    table_ids: tuple[UUID, ...]
    window: TstzRange
    require_adjacency: bool
    reason: str = "auto_assign_remediation"

    @property
    def idempotency_key(self) -> str:
        """Deterministic per (booking, sorted tables, window)."""
        tables = ",".join(sorted(str(t) for t in self.table_ids))
        digest = hashlib.sha256(f"{self.booking_id}|{tables}|{self.window.to_postgres()}".encode()).hexdigest()
        return f"{ALLOCGUARD_KEY_PREFIX}{digest[:24]}"


@dataclass(frozen=True)
class Attempt:
    number: int
    waited_s: float
    outcome: str  # assigned | error kind
    error: str | None = None


@dataclass
class RetryOutcome:
    status: str  # assigned | not_needed | gave_up
    reason: str
    attempts: list[Attempt] = field(default_factory=list)


class AssignStrategy(Protocol):
    name: str

    def assign(self, request: AssignRequest) -> None:
        """Assign and confirm, or raise a :class:`RemediationError`."""


def classify_db_error(exc: psycopg.Error) -> RemediationError:
    """SQLSTATE and message of a platform error → a typed failure with a retryable flag (domain.md §9)."""
    state = exc.sqlstate or ""
    message = (exc.diag.message_primary if exc.diag else None) or str(exc)
    text = f"{state} {message}"
    if state == "P0001" and "allocations_no_overlap" in message:
        return NewBlockerError(text)
    if state == "P0001" and message.startswith("Hold conflict"):
        return HoldConflictError(text)
    if state in ("40001", "40P01", "55P03", "57014"):
        return TransientDatabaseError(text)
    cause = infrastructure_cause(exc)
    if cause is not None:
        # not the assignment's fault: no verdict, the runtime holds the event until the cause is fixed
        return InfrastructureError(cause)
    if state == "23514" and "locked to zone" in message:
        return PermanentAssignError(f"the booking's zone lock is stale: {text}")
    if state == "P0001" and "capacity_exceeded_post_assignment" in message:
        return PermanentAssignError(text)
    if state == "23P01":
        return PermanentAssignError(f"the target already has an assignment without allocation: {text}")
    return PermanentAssignError(text)


def verify_assigned(conn: Conn, request: AssignRequest) -> None:
    verified(request, queue_verification(conn, request))


def queue_verification(conn: Conn, request: AssignRequest) -> psycopg.Cursor[Any]:
    """The statement that counts the victim's assignment and allocation rows on the tables (in a pipeline, sent
    with the statements before it; :func:`verified` reads it)."""
    return conn.cursor().execute(
        "SELECT (SELECT count(*) FROM public.booking_table_assignments"
        "         WHERE booking_id = %(b)s AND table_id = ANY(%(t)s)),"
        "       (SELECT count(*) FROM public.allocations WHERE booking_id = %(b)s AND resource_type = 'table'"
        "         AND resource_id = ANY(%(t)s) AND NOT shadow)",
        {"b": request.booking_id, "t": list(request.table_ids)},
    )


def verified(request: AssignRequest, counts: psycopg.Cursor[Any]) -> None:
    row = counts.fetchone()
    want = len(set(request.table_ids))
    if row is None or row[0] != want or row[1] != want:
        raise VerificationError(f"expected {want} assignment(s) and allocation(s), found {row}")


def check_still_needed(conn: Conn, booking_id: UUID, *, lock: bool) -> str:
    """The victim's status; raises NotNeededError when it is not pending any more or has tables."""
    query = (
        "SELECT status::text FROM public.bookings WHERE id = %s FOR UPDATE"
        if lock
        else "SELECT status::text FROM public.bookings WHERE id = %s"
    )
    # both sent at once in a pipeline: the count runs after the lock is held, on what was committed before it
    status = conn.cursor().execute(query, (booking_id,))
    count = conn.cursor().execute(
        "SELECT count(*) FROM public.booking_table_assignments WHERE booking_id = %s", (booking_id,)
    )
    row = status.fetchone()
    if row is None:
        raise NotNeededError("the booking no longer exists")
    if row[0] not in ("pending", "pending_allocation"):
        raise NotNeededError(f"the booking is {row[0]}")
    tables = count.fetchone()
    if tables is not None and tables[0]:
        raise NotNeededError("the booking has gained table assignments")
    return str(row[0])


class SqlAssign:
    """``assign_tables_atomic_v2`` (all 7 named arguments) + ``apply_booking_state_transition``, one transaction."""

    name = "sql"

    def __init__(self, connect: Connect, actor: str = "allocguard") -> None:
        self._connect = connect
        self._actor = actor

    def assign(self, request: AssignRequest) -> None:
        try:
            # three round trips in one pipeline: the lock and the checks; the writes and the verification; COMMIT
            # (sent only once every check passed — a failed one rolls everything back)
            with self._connect() as conn, conn.pipeline(), conn.transaction():
                platform.server_plans(conn)
                previous = check_still_needed(conn, request.booking_id, lock=True)
                self._clear_ledger_traps(conn, request)
                assigned = platform.assign(
                    conn,
                    request.booking_id,
                    request.table_ids,
                    request.idempotency_key,
                    request.require_adjacency,
                    request.window.lower,
                    request.window.upper,
                )
                metadata = {"source": "remediation-consumer", "actor": self._actor, "key": request.idempotency_key}
                platform.confirm(conn, request.booking_id, previous, request.reason, metadata)
                counts = queue_verification(conn, request)
                if not assigned.fetchall():
                    raise VerificationError("assign_tables_atomic_v2 returned no rows (ledger replay)")
                verified(request, counts)
        except psycopg.Error as exc:
            raise classify_db_error(exc) from exc

    @staticmethod
    def _clear_ledger_traps(conn: Conn, request: AssignRequest) -> None:
        """Ledger rows for this booking whose assignment rows are gone make the function return nothing (same
        key) or fail with 23505 (same table set, other key). The victim has no assignments (checked), so any
        such row is stale: remove it in the same transaction."""
        platform.clear_ledger_traps(conn, request.booking_id, request.idempotency_key, request.table_ids)


#: sends one request and returns the response body (raises urllib's HTTPError for a status ≥ 400); the runtime
#: passes a traced one (consumer.telemetry.traced_send: a CLIENT span, ``traceparent``)
Send = Callable[[urllib.request.Request, float], bytes]


def plain_send(request: urllib.request.Request, timeout: float) -> bytes:
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (scheme checked by HttpAssign)
        body: bytes = response.read()
        return body


class HttpAssign:
    """Asks the platform's app (a configurable endpoint) to assign, then verifies in the database.

    Credentials: ``headers`` (a secret setting, e.g. ``Authorization: Bearer …``), or ``user:password@`` in the
    endpoint, sent as HTTP Basic and taken out of the URL (urllib cannot open a URL that carries them)."""

    name = "http"

    def __init__(
        self,
        endpoint: str,
        connect: Connect,
        timeout_s: float = 10.0,
        headers: Mapping[str, str] | None = None,
        send: Send = plain_send,
    ) -> None:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # never echo the endpoint: it may carry credentials
            raise ValueError("the assign endpoint must be an http(s) URL with a host")
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if parts.username is not None:
            pair = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
            self._headers.setdefault("Authorization", "Basic " + base64.b64encode(pair.encode()).decode())
            host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
            netloc = f"{host}:{parts.port}" if parts.port else host
            endpoint = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        self._endpoint = endpoint
        self._connect = connect
        self._timeout = timeout_s
        self._send = send

    def assign(self, request: AssignRequest) -> None:
        with self._connect() as conn:
            check_still_needed(conn, request.booking_id, lock=False)
        body = json.dumps(
            {
                "bookingId": str(request.booking_id),
                "tableIds": [str(t) for t in request.table_ids],
                "startAt": request.window.lower.isoformat() if request.window.lower else None,
                "endAt": request.window.upper.isoformat() if request.window.upper else None,
                "requireAdjacency": request.require_adjacency,
                "idempotencyKey": request.idempotency_key,
                "reason": request.reason,
            }
        ).encode()
        http_request = urllib.request.Request(  # noqa: S310 (scheme checked in __init__)
            self._endpoint, data=body, method="POST", headers=dict(self._headers)
        )
        try:
            self._send(http_request, self._timeout)
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if "allocations_no_overlap" in text:
                raise NewBlockerError(text) from exc
            if "Hold conflict" in text:
                raise HoldConflictError(text) from exc
            if exc.code >= 500 or exc.code == 429:
                raise TransientDatabaseError(f"HTTP {exc.code}: {text[:200]}") from exc
            raise PermanentAssignError(f"HTTP {exc.code}: {text[:200]}") from exc
        except (urllib.error.URLError, TimeoutError, http.client.HTTPException, OSError) as exc:
            raise TransientDatabaseError(f"assign endpoint unreachable: {exc}") from exc
        with self._connect() as conn:
            verify_assigned(conn, request)


class _StopAfterElapsed(stop_base):
    """Like tenacity's stop_before_delay, on an injectable clock: no attempt starts past the budget."""

    def __init__(self, clock: Callable[[], float], limit_s: float) -> None:
        self._clock = clock
        self._limit = limit_s
        self._start = clock()

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._clock() - self._start + retry_state.upcoming_sleep >= self._limit


class _Wait(wait_base):
    """Exponential backoff with jitter; a hold conflict waits at least ``hold_conflict_wait_s``."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy
        self._backoff = wait_exponential_jitter(
            multiplier=policy.initial_wait_s, max=policy.max_wait_s, jitter=policy.jitter_s
        )

    def __call__(self, retry_state: RetryCallState) -> float:
        wait = float(self._backoff(retry_state))
        outcome = retry_state.outcome
        if outcome is not None and isinstance(outcome.exception(), HoldConflictError):
            wait = max(wait, self._policy.hold_conflict_wait_s)
        return wait


def _retryable(exc: BaseException) -> bool:
    """What this policy retries. A new blocker goes back to the planner; an infrastructure failure goes to the
    runtime (which holds the event without a verdict): neither is retried here."""
    if isinstance(exc, NewBlockerError | InfrastructureError):
        return False
    return isinstance(exc, RemediationError) and exc.retryable


def _retries(policy: RetryPolicy) -> Callable[[BaseException], bool]:
    def retryable(exc: BaseException) -> bool:
        if policy.defer_hold_conflicts and isinstance(exc, HoldConflictError):
            return False
        return _retryable(exc)

    return retryable


def run_retry(
    strategy: AssignStrategy,
    request: AssignRequest,
    policy: RetryPolicy,
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_attempt: Callable[[Attempt], None] | None = None,
    span: Callable[..., AbstractContextManager[Any]] | None = None,
) -> RetryOutcome:
    """Try the assignment under ``policy``. NewBlockerError propagates (the caller re-plans)."""
    attempts: list[Attempt] = []
    waited = {"last": 0.0}

    def before_sleep(state: RetryCallState) -> None:
        waited["last"] = state.next_action.sleep if state.next_action else 0.0

    def record(number: int, outcome: str, error: str | None) -> None:
        attempt = Attempt(number, waited["last"], outcome, error)
        attempts.append(attempt)
        if on_attempt is not None:
            on_attempt(attempt)

    retrying = Retrying(
        stop=stop_after_attempt(policy.max_attempts) | _StopAfterElapsed(clock, policy.max_total_s),
        wait=_Wait(policy),
        retry=retry_if_exception(_retries(policy)),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        for attempt in retrying:
            with attempt:
                number = attempt.retry_state.attempt_number
                attributes = {
                    "allocguard.attempt.number": number,
                    "allocguard.attempt.wait_s": waited["last"],
                    "allocguard.attempt.strategy": strategy.name,
                    "allocguard.attempt.table_ids": [str(t) for t in request.table_ids],
                }
                with span("allocguard.retry.attempt", attributes, None) if span else nullcontext() as handle:
                    try:
                        strategy.assign(request)
                    except RemediationError as exc:
                        record(number, exc.kind, str(exc))
                        if handle is not None:
                            handle.set("allocguard.attempt.outcome", exc.kind)
                            handle.set("allocguard.attempt.error_class", type(exc).__name__)
                            handle.set("allocguard.attempt.retryable", exc.retryable)
                        raise
                    record(number, "assigned", None)
                    if handle is not None:
                        handle.set("allocguard.attempt.outcome", "assigned")
    except NotNeededError as exc:
        return RetryOutcome("not_needed", str(exc), attempts)
    except (NewBlockerError, InfrastructureError):
        raise
    except RemediationError as exc:
        if policy.defer_hold_conflicts and isinstance(exc, HoldConflictError):
            raise  # the caller defers it: a due time, not a sleeping worker
        why = "attempts exhausted" if exc.retryable else "not retryable"
        return RetryOutcome("gave_up", f"{why} after {len(attempts)} attempt(s): {exc.kind}: {exc}", attempts)
    return RetryOutcome("assigned", f"assigned on attempt {len(attempts)}", attempts)
