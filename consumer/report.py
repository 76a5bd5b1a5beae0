"""Human-readable and JSON renderings of evidence and plans (diagnose, and later traces and replay)."""

from __future__ import annotations

from typing import Any

from schemas.records import Plan


def unique_prefixes(ids: list[str], minimum: int = 8) -> dict[str, str]:
    """The shortest prefix of at least ``minimum`` characters that tells every id in the list apart (as git
    abbreviates commits): ids that share 8 characters are shown longer, never ambiguous."""
    distinct = sorted(set(ids))
    width = minimum
    while width < max((len(i) for i in distinct), default=0) and len({i[:width] for i in distinct}) < len(distinct):
        width += 1
    return {i: i[:width] for i in distinct}


def _short(value: object) -> str:
    text = str(value) if value is not None else "-"
    return text[:8] if len(text) == 36 else text


def plan_as_text(
    plan: Plan,
    *,
    remediations: list[dict[str, Any]] | None = None,
    incidents: list[dict[str, Any]] | None = None,
) -> str:
    incident = plan.incident
    lines = [
        f"booking {incident.booking_id}  status {plan.victim_status or 'missing'}"
        f"  assigned {'yes' if plan.victim_has_assignment else 'no'}",
        f"attempt  window {incident.window.to_postgres()}  tables "
        + ", ".join(str(t) for t in incident.table_ids)
        + f"  (from {incident.window_source}{' ' + str(incident.hold_id) if incident.hold_id else ''})",
        f"decision {plan.decision}: {plan.decision_reason}",
        "counts   " + ", ".join(f"{k} {v}" for k, v in plan.counts().items()),
        "",
    ]
    header = ("ALLOCATION", "TABLE", "OWNER", "OWNER STATUS", "ASSIGNED", "BLOCKS", "WINDOW", "VERDICT")
    rows = [
        (
            _short(e.allocation_id),
            _short(e.table_id),
            _short(e.booking_id),
            e.owner_status or "-",
            "yes" if e.owner_has_assignment else "no",
            "yes" if e.blocks else "no",
            e.window.to_postgres(),
            e.verdict.value,
        )
        for e in plan.evidence
    ]
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    if plan.evidence:
        lines.append("")
        lines.append("reasons:")
        lines.extend(f"  {_short(e.allocation_id)} {e.verdict.value}: {e.reason}" for e in plan.evidence)
    else:
        lines.append("(no allocation overlaps the attempted tables and window)")
    if plan.prune_ids:
        lines.append("")
        lines.append("would prune: " + ", ".join(str(i) for i in plan.prune_ids))
    for rem in remediations or []:
        lines.append(
            f"remediation {rem['id']} ({rem['mode']}, {rem['created_at']:%Y-%m-%d %H:%M:%S}): "
            f"{len(rem['allocation_ids'])} allocation(s) — {rem['reason']}"
            + (f"  trace {rem['trace_id']} span {rem['span_id']}" if rem.get("trace_id") else "")
        )
    for record in incidents or []:
        traced = f"  trace {record['trace_id']} span {record['span_id']}" if record.get("trace_id") else ""
        lines.append(f"incident {record['id']} {record['status']} ({record['event_count']} failure event(s)){traced}")
        if record.get("trace_url"):
            lines.append(f"  open the trace: {record['trace_url']}")
    return "\n".join(lines)


def plan_as_json(
    plan: Plan,
    *,
    remediations: list[dict[str, Any]] | None = None,
    incidents: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    doc = plan.model_dump(mode="json")
    doc["key"] = plan.key
    doc["counts"] = plan.counts()
    doc["remediations"] = [
        {
            k: (str(v) if not isinstance(v, (int, float, bool, list, dict)) and v is not None else v)
            for k, v in rem.items()
            if k not in ("before_rows", "after_rows", "evidence")
        }
        for rem in remediations or []
    ]
    keys = ("id", "status", "trace_id", "span_id", "trace_url")
    doc["incidents"] = [{k: str(row[k]) if row.get(k) is not None else None for k in keys} for row in incidents or []]
    return doc
