-- Least privilege for the remediator: read what the evidence needs, delete allocations, archive them,
-- write observability rows, and call the platform's assign / transition functions. Nothing else.
-- (SELECT … FOR UPDATE needs UPDATE on at least one column: updated_at only.)
-- The role is NOLOGIN; a deployment grants it to its login user (`GRANT allocguard_remediator TO app`).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'allocguard_remediator') THEN
    CREATE ROLE allocguard_remediator NOLOGIN;
  END IF;
END $$;

GRANT USAGE ON SCHEMA public, allocguard TO allocguard_remediator;
GRANT SELECT ON public.bookings, public.booking_table_assignments, public.allocations, public.table_holds,
  public.table_hold_members, public.table_inventory, public.observability_events,
  public.booking_assignment_idempotency, public.allocations_archive TO allocguard_remediator;
GRANT UPDATE (updated_at) ON public.bookings, public.allocations TO allocguard_remediator;
GRANT DELETE ON public.allocations TO allocguard_remediator;
GRANT INSERT ON public.allocations_archive, public.observability_events TO allocguard_remediator;
-- the ledger trap: a stale ledger row for the same table set must go before the retry (see handlers/retry.py)
GRANT DELETE ON public.booking_assignment_idempotency TO allocguard_remediator;
GRANT EXECUTE ON FUNCTION
  public.assign_tables_atomic_v2(uuid, uuid[], text, boolean, uuid, timestamptz, timestamptz),
  public.apply_booking_state_transition(uuid, public.booking_status, timestamptz, timestamptz, timestamptz,
    public.booking_status, public.booking_status, uuid, timestamptz, text, jsonb)
  TO allocguard_remediator;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA allocguard TO allocguard_remediator;
ALTER DEFAULT PRIVILEGES IN SCHEMA allocguard GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO allocguard_remediator;
REVOKE ALL ON allocguard.schema_migrations FROM allocguard_remediator;
