"""``allocguard reconcile``: sweep the database for orphan and stale-by-status allocations, without waiting for a
booking to fail on them.

Candidates are read from the database alone: table allocations (not shadow, not maintenance) whose booking has no
assignment row for that table, or whose booking is cancelled/completed/no_show — in windows that have not ended
(or a given range), for every restaurant or one. Each candidate is judged by the same evidence code as an
incident (grace period, active holds, the owner's status and assignments) and, with ``--apply``, handed to the
same executor, which re-proves it on committed state inside its transaction. Dry-run by default. The person who
runs ``--apply`` is the approval (recorded as the actor); stale-by-status owners are only released with
``--release-stale`` as well, through ``unassign_tables_atomic``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from uuid import UUID

from consumer.config import RuntimeSettings
from consumer.operations import standalone_remediator
from handlers.execute import apply_plan
from handlers.sweep import candidates, judge, scoped
from schemas.records import AllocationEvidence, Decision, Mode, Verdict

Echo = Callable[[str], None]


@dataclass
class Finding:
    evidence: AllocationEvidence
    restaurant_id: UUID
    #: what --apply did: pruned, released, skipped (with the re-check's reason), or "" in a dry run
    action: str = ""


@dataclass
class Sweep:
    findings: list[Finding] = field(default_factory=list)
    pruned: int = 0
    released: int = 0
    refused: int = 0

    def by_verdict(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for finding in self.findings:
            counts[finding.evidence.verdict.value] = counts.get(finding.evidence.verdict.value, 0) + 1
        return counts


def reconcile(
    settings: RuntimeSettings,
    *,
    restaurant: UUID | None,
    since: datetime | None,
    until: datetime | None,
    apply: bool,
    release_stale: bool,
    actor: str,
    artifacts_dir: Path | None,
    limit: int = 10_000,
) -> Sweep:
    _, connect = standalone_remediator(settings, Mode.DRY_RUN, actor, None)
    grace = timedelta(seconds=settings.grace_s)
    sweep = Sweep()
    with connect() as conn:
        found = candidates(conn, restaurant=restaurant, since=since, until=until, limit=limit)
        for row in found:
            judged = judge(conn, row, grace)
            if judged is None:
                continue  # gone meanwhile
            plan, evidence = judged
            finding = Finding(evidence, row["restaurant_id"])
            sweep.findings.append(finding)
            act_on_stale = release_stale and evidence.verdict is Verdict.STALE_BY_STATUS
            if not apply or not (evidence.verdict is Verdict.ORPHAN or act_on_stale):
                continue
            one = scoped(plan, evidence, release_stale, Decision.RECONCILE)
            result = apply_plan(conn, one, mode=Mode.AUTO, actor=actor, grace=grace, artifacts_dir=artifacts_dir)
            if result.pruned_ids:
                sweep.pruned += 1
                finding.action = "pruned"
            elif result.released_ids:
                sweep.released += 1
                finding.action = "released"
            elif result.status == "already_done":
                finding.action = "already done"
            else:
                sweep.refused += 1
                finding.action = "refused: " + "; ".join(sorted(set(result.skipped.values())))
    return sweep


def print_sweep(sweep: Sweep, as_json: bool, applied: bool, echo: Echo) -> None:
    if as_json:
        echo(
            json.dumps(
                {
                    "counts": sweep.by_verdict(),
                    "pruned": sweep.pruned,
                    "released": sweep.released,
                    "refused": sweep.refused,
                    "findings": [
                        {
                            **f.evidence.model_dump(mode="json"),
                            "restaurant_id": str(f.restaurant_id),
                            "action": f.action or None,
                        }
                        for f in sweep.findings
                    ],
                },
                indent=2,
            )
        )
        return
    header = ("ALLOCATION", "RESTAURANT", "TABLE", "OWNER", "OWNER STATUS", "WINDOW", "VERDICT", "ACTION")
    rows = [
        (
            str(f.evidence.allocation_id),
            str(f.restaurant_id)[:8],
            str(f.evidence.table_id)[:8],
            str(f.evidence.booking_id)[:8],
            f.evidence.owner_status or "-",
            f.evidence.window.to_postgres(),
            f.evidence.verdict.value,
            f.action or ("would prune" if f.evidence.verdict is Verdict.ORPHAN else "-"),
        )
        for f in sweep.findings
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for line in [header, *rows]:
        echo("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line)).rstrip())
    counts = ", ".join(f"{n} {v}" for v, n in sorted(sweep.by_verdict().items())) or "nothing found"
    echo(f"\n{len(sweep.findings)} candidate(s): {counts}")
    for f in sweep.findings:
        if f.evidence.verdict is not Verdict.ORPHAN:
            echo(f"  {str(f.evidence.allocation_id)[:8]} {f.evidence.verdict.value}: {f.evidence.reason}")
    if applied:
        echo(f"applied: {sweep.pruned} pruned, {sweep.released} released, {sweep.refused} refused by the re-check")
    else:
        echo("dry run: nothing was changed (--apply prunes the orphans; --release-stale also releases stale owners)")
