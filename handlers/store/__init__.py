"""Reads of the platform's state and allocguard's own records, split by concern (parameterised SQL only).

Nothing here writes the platform's tables: that is :mod:`handlers.platform`.
"""

from __future__ import annotations

from handlers.store.common import (
    Conn as Conn,
)
from handlers.store.common import (
    configure as configure,
)
from handlers.store.common import (
    database_now as database_now,
)
from handlers.store.common import (
    from_pg_range as from_pg_range,
)
from handlers.store.common import (
    to_json as to_json,
)
from handlers.store.common import (
    to_pg_range as to_pg_range,
)
from handlers.store.common import (
    use_orjson as use_orjson,
)
from handlers.store.dlq import park as park
from handlers.store.dlq import parked as parked
from handlers.store.dlq import unpark as unpark
from handlers.store.holds import (
    hold_announcements as hold_announcements,
)
from handlers.store.holds import (
    recall_hold as recall_hold,
)
from handlers.store.holds import (
    remember_holds as remember_holds,
)
from handlers.store.holds import (
    sweep_holds as sweep_holds,
)
from handlers.store.incidents import (
    BookingWindow as BookingWindow,
)
from handlers.store.incidents import (
    Recorded as Recorded,
)
from handlers.store.incidents import (
    Settlement as Settlement,
)
from handlers.store.incidents import (
    Triage as Triage,
)
from handlers.store.incidents import (
    booking_window as booking_window,
)
from handlers.store.incidents import (
    failure_events as failure_events,
)
from handlers.store.incidents import (
    first_trace_id as first_trace_id,
)
from handlers.store.incidents import (
    fold_duplicates as fold_duplicates,
)
from handlers.store.incidents import (
    incident_of_booking as incident_of_booking,
)
from handlers.store.incidents import (
    incident_rows as incident_rows,
)
from handlers.store.incidents import (
    mark_processed as mark_processed,
)
from handlers.store.incidents import (
    record_incident_and_snapshot as record_incident_and_snapshot,
)
from handlers.store.incidents import (
    record_incidents_and_snapshots as record_incidents_and_snapshots,
)
from handlers.store.incidents import (
    remediation_rows as remediation_rows,
)
from handlers.store.incidents import (
    remember_and_triage as remember_and_triage,
)
from handlers.store.incidents import (
    set_incident_status as set_incident_status,
)
from handlers.store.incidents import (
    set_incident_trace as set_incident_trace,
)
from handlers.store.incidents import (
    settle_incident as settle_incident,
)
from handlers.store.incidents import (
    settle_incidents as settle_incidents,
)
from handlers.store.incidents import (
    signal_events_between as signal_events_between,
)
from handlers.store.incidents import (
    was_processed as was_processed,
)
from handlers.store.plans import (
    create_pending_plan as create_pending_plan,
)
from handlers.store.plans import (
    decide_plan as decide_plan,
)
from handlers.store.plans import (
    expire_plans as expire_plans,
)
from handlers.store.plans import (
    lock_plan as lock_plan,
)
from handlers.store.plans import (
    plan_row as plan_row,
)
from handlers.store.plans import (
    plan_rows as plan_rows,
)
from handlers.store.plans import (
    remediations_last_hour as remediations_last_hour,
)
from handlers.store.snapshot import (
    assigned_by_allocguard as assigned_by_allocguard,
)
from handlers.store.snapshot import (
    load_snapshot as load_snapshot,
)
from handlers.store.wakeups import (
    claim_due as claim_due,
)
from handlers.store.wakeups import (
    defer_hold_conflict as defer_hold_conflict,
)
from handlers.store.wakeups import (
    load_incident as load_incident,
)
from handlers.store.wakeups import (
    schedule_recheck as schedule_recheck,
)
