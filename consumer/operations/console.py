"""The console: plain server-rendered pages of ``allocguard serve`` for people — incidents that need a person, each
waiting plan with its evidence table and trace link, past decisions — and approve/reject as POSTed forms.

- Links (from chat, from a decision request) open pages; they never decide: a decision is a POST carrying the
  form's CSRF token, which must equal the ``agcsrf`` cookie (SameSite=Strict) — a cross-site form cannot read it —
  and an ``Origin``, when the browser sends one, of this host.
- Who: the proxy's identity header (``serve --identity-header``), or an operator's token given once on ``/login``
  and kept in an HttpOnly, SameSite=Strict cookie (checked against ``allocguard.api_tokens`` on every request, so a
  revoked token is out at once).
- Never a guest's data: ids, statuses, verdicts and reasons only."""

from __future__ import annotations

import html
from collections.abc import Iterable
from typing import Any

_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#1b1f24;max-width:72rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f6f8fa}code{font-size:.85rem}
.orphan{color:#0a7d32;font-weight:600}.legitimate,.protected{color:#6e7781}.stale_by_status{color:#9a6700}
form.decide{display:inline-block;margin-right:1rem}button{font-size:1rem;padding:.4rem 1rem;cursor:pointer}
.approve{background:#1f883d;color:#fff;border:0;border-radius:6px}.reject{border-radius:6px}
.who{float:right;color:#57606a}.muted{color:#57606a}
"""


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value))


def page(title: str, who: str | None, body: str) -> str:
    signed = f'<span class="who">signed in as <b>{esc(who)}</b></span>' if who else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)} · allocguard</title><style>{_STYLE}</style></head>"
        f'<body>{signed}<h1><a href="/">allocguard</a> · {esc(title)}</h1>{body}</body></html>'
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], empty: str) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>" if body else f'<p class="muted">{esc(empty)}</p>'


def login(message: str = "") -> str:
    note = f'<p class="muted">{esc(message)}</p>' if message else ""
    return page(
        "sign in",
        None,
        f'{note}<form method="post" action="/login"><label>Your token (<code>allocguard tokens add</code>) '
        '<input type="password" name="token" autocomplete="off" size="50"></label> '
        '<button type="submit">Sign in</button></form>',
    )


def index(who: str, plans: list[dict[str, Any]], incidents: list[dict[str, Any]], decided: list[dict[str, Any]]) -> str:
    waiting = table(
        ("plan", "booking", "restaurant", "allocations", "why it waits", "expires"),
        (
            (
                f'<a href="/plans/{esc(p["id"])}"><code>{esc(str(p["id"])[:8])}</code></a>',
                f"<code>{esc(p['booking_id'])}</code>",
                f"<code>{esc(p['restaurant_id'])}</code>",
                esc(len(p["allocation_ids"])),
                esc(p["why_pending"]),
                esc(p["expires_at"]),
            )
            for p in plans
        ),
        "No plan waits for a decision.",
    )
    review = table(
        ("incident", "booking", "status", "why"),
        (
            (
                f"<code>{esc(str(i['id'])[:8])}</code>",
                f"<code>{esc(i['booking_id'])}</code>",
                esc(i["status"]),
                esc(i["status_reason"]),
            )
            for i in incidents
        ),
        "No incident needs a person.",
    )
    history = table(
        ("plan", "decision", "by", "when", "note"),
        (
            (
                f'<a href="/plans/{esc(p["id"])}"><code>{esc(str(p["id"])[:8])}</code></a>',
                esc(p["status"]),
                esc(p["decided_by"]),
                esc(p["decided_at"]),
                esc(p["note"]),
            )
            for p in decided
        ),
        "No decisions yet.",
    )
    return page(
        "decisions",
        who,
        f"<h2>Plans waiting for a decision</h2>{waiting}<h2>Incidents in manual review</h2>{review}"
        f"<h2>Past decisions</h2>{history}",
    )


def plan_page(
    who: str, may_decide: bool, row: dict[str, Any], incident_status: str | None, trace_url: str | None, csrf: str
) -> str:
    plan = row["plan"] or {}
    planned = {str(a) for a in row["allocation_ids"]}
    evidence = table(
        ("allocation", "owner booking", "owner status", "verdict", "why", "reason"),
        (
            (
                f"<code>{esc(e.get('allocation_id'))}</code>"
                + (" <b>(in the plan)</b>" if str(e.get("allocation_id")) in planned else ""),
                f"<code>{esc(e.get('booking_id'))}</code>",
                esc(e.get("owner_status")),
                f'<span class="{esc(e.get("verdict"))}">{esc(e.get("verdict"))}</span>',
                esc(e.get("why")),
                esc(e.get("reason")),
            )
            for e in plan.get("evidence", [])
        ),
        "No evidence recorded.",
    )
    trace = f'<a href="{esc(trace_url)}">the incident\'s trace</a>' if trace_url else "no trace recorded"
    facts = (
        f"<p>Plan <code>{esc(row['id'])}</code> — <b id=status>{esc(row['status'])}</b> — {esc(row['kind'])} "
        f"{esc(len(row['allocation_ids']))} allocation(s) blocking booking <code>{esc(row['booking_id'])}</code> "
        f"(restaurant <code>{esc(row['restaurant_id'])}</code>).</p>"
        f"<p>Why it waits: {esc(row['why_pending'])}. Created {esc(row['created_at'])}, expires "
        f"{esc(row['expires_at'])}. {trace}.</p>"
    )
    if row["status"] == "pending" and may_decide:
        forms = "".join(
            f'<form class="decide" method="post" action="/plans/{esc(row["id"])}/{verb}">'
            f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
            f'<input name="note" placeholder="note (recorded)" size="30"> '
            f'<button class="{verb}" type="submit" name="decision" value="{verb}">{verb.capitalize()}</button></form>'
            for verb in ("approve", "reject")
        )
        decision = f"<h2>Decide</h2>{forms}"
    elif row["status"] == "pending":
        decision = '<p class="muted">Your token may read, not decide.</p>'
    else:
        outcome = row.get("outcome") or {}
        pruned = f" Prune: {esc(outcome.get('prune'))}." if outcome.get("prune") else ""
        decision = (
            f"<h2>Decision</h2><p id=decision>{esc(row['status'])} by <b>{esc(row['decided_by'])}</b> at "
            f"{esc(row['decided_at'])}{': ' + esc(row['note']) if row['note'] else ''}.{pruned}</p>"
        )
    decision += f"<p>Incident: <b id=incident>{esc(incident_status)}</b>.</p>"
    return page(f"plan {str(row['id'])[:8]}", who, f"{facts}<h2>Evidence</h2>{evidence}{decision}")
