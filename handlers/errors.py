"""Failure classes of the remediation path. Each says whether trying again can help (``retryable``)."""

from __future__ import annotations


class RemediationError(Exception):
    retryable = False
    #: a short machine-readable class name for records, spans and metrics
    kind = "error"


class NewBlockerError(RemediationError):
    """The retry hit ``allocations_no_overlap`` again: another blocker appeared. Re-detect and re-plan."""

    retryable = True
    kind = "new_blocker"


class HoldConflictError(RemediationError):
    """Another booking's active hold covers the table: wait for it to expire or be confirmed."""

    retryable = True
    kind = "hold_conflict"


class TransientDatabaseError(RemediationError):
    """Serialization failure, deadlock, lock timeout or a lost connection: back off and try again."""

    retryable = True
    kind = "transient_db"


class NotNeededError(RemediationError):
    """The victim is no longer pending, or has gained tables: stop, nothing to do."""

    kind = "not_needed"


class PermanentAssignError(RemediationError):
    """The platform refused the assignment for a reason retrying cannot change (zone lock, capacity, …)."""

    kind = "permanent"


class VerificationError(RemediationError):
    """The assign call returned, but the assignment rows or allocations are not there."""

    kind = "verification"


class InfrastructureError(RemediationError):
    """Something around the remediation is broken, not the remediation: a privilege revoked, an object missing,
    the database unreachable. Never a verdict and never a dead letter: the runtime holds the event (its offset
    is not committed), pauses its partitions, reports not-ready, and tries again until the cause is fixed."""

    retryable = True
    kind = "infrastructure"


#: SQLSTATE classes and codes that mean "the surroundings are broken", whatever statement hit them
_INFRASTRUCTURE_STATES = ("08", "28", "3D", "53", "57P")
_INFRASTRUCTURE_CODES = frozenset(
    {
        "42501",  # insufficient_privilege: a grant, a policy or a column privilege is missing
        "42P01",  # undefined_table
        "42703",  # undefined_column
        "42883",  # undefined_function
        "3F000",  # invalid_schema_name
        "25006",  # read_only_sql_transaction (a standby, a read-only role)
    }
)


#: contention, not breakage: serialization failure, deadlock, lock timeout, statement timeout — back off and
#: try again, without pausing anything
CONTENTION_STATES = frozenset({"40001", "40P01", "55P03", "57014"})


def _sqlstates(exc: BaseException) -> list[str]:
    import psycopg

    found: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, psycopg.Error) and seen.sqlstate:
            found.append(seen.sqlstate)
        seen = seen.__cause__
    return found


def is_contention(exc: BaseException) -> bool:
    return isinstance(exc, TransientDatabaseError) or any(s in CONTENTION_STATES for s in _sqlstates(exc))


def infrastructure_cause(exc: BaseException) -> str | None:
    """Why ``exc`` is an infrastructure failure (a short reason for /readyz and the log), or None."""
    import psycopg

    if is_contention(exc):
        return None
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, InfrastructureError):
            return str(seen)
        if isinstance(seen, psycopg.Error):
            state = seen.sqlstate or ""
            if isinstance(seen, psycopg.OperationalError) or state.startswith(_INFRASTRUCTURE_STATES):
                return f"database unavailable: {type(seen).__name__}: {_first_line(seen)}"
            if state in _INFRASTRUCTURE_CODES:
                return f"database refused ({state}): {_first_line(seen)}"
        seen = seen.__cause__
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
