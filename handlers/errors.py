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
