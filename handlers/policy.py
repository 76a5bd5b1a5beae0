"""Remediation policy: which plans run at once and which wait for a person.

A plan waits — it becomes a *pending plan* carrying its evidence — when the mode is ``approve``, or when it leaves
the guardrails: more allocations in one plan than the cap, too many remediations for one restaurant in the last
hour, a restaurant outside the allow list or on the deny list, or a stale-by-status release while that class is
set to ``approve`` (the default). Approving runs the same executor with the same re-check.

Pure: the hourly count comes in through ``recent``, so the rules are unit-testable without a database.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from enum import StrEnum
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from schemas.records import Mode, Plan


class StalePolicy(StrEnum):
    """What to do with owners that are cancelled/completed/no_show but still hold their assignment."""

    OFF = "off"  # report only (manual review)
    APPROVE = "approve"  # a pending release plan; a person approves it
    AUTO = "auto"  # release at once through unassign_tables_atomic


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True)

    #: allocations (pruned plus released) one plan may touch without a person
    max_allocations_per_plan: int = Field(default=5, ge=0)
    #: remediations per restaurant per rolling hour without a person (a soft cap: counted, not locked)
    max_per_restaurant_hour: int = Field(default=20, ge=0)
    #: when set, only these restaurants are remediated without a person
    allow_restaurants: frozenset[UUID] | None = None
    #: never remediated without a person
    deny_restaurants: frozenset[UUID] = frozenset()
    stale_by_status: StalePolicy = StalePolicy.APPROVE
    #: a pending plan not decided within this expires (the world it was proven in is gone by then)
    plan_ttl: timedelta = timedelta(hours=2)
    #: the person whose command made a plan may approve it too (four eyes otherwise)
    allow_self_approval: bool = False


def approval_needed(plan: Plan, mode: Mode, policy: Policy, recent: Callable[[UUID], int]) -> str | None:
    """Why this plan must wait for a person, or None when it may run now. ``recent(restaurant)`` counts the
    restaurant's remediations of the last hour."""
    reasons: list[str] = []
    restaurant = plan.incident.restaurant_id
    if mode is Mode.APPROVE:
        reasons.append("mode approve: every plan waits for a person")
    touched = len(plan.prune_ids) + len(plan.release_ids)
    if touched > policy.max_allocations_per_plan:
        reasons.append(f"{touched} allocations in one plan, above the cap of {policy.max_allocations_per_plan}")
    if restaurant in policy.deny_restaurants:
        reasons.append(f"restaurant {restaurant} is on the deny list")
    if policy.allow_restaurants is not None and restaurant not in policy.allow_restaurants:
        reasons.append(f"restaurant {restaurant} is not on the allow list")
    if plan.release_ids and policy.stale_by_status is StalePolicy.APPROVE:
        reasons.append("releasing stale-by-status owners waits for approval (policy stale_by_status=approve)")
    if not reasons:
        count = recent(restaurant)
        if count >= policy.max_per_restaurant_hour:
            reasons.append(
                f"{count} remediations for restaurant {restaurant} in the last hour, "
                f"at the cap of {policy.max_per_restaurant_hour}"
            )
    return "; ".join(reasons) or None
