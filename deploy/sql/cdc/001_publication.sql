-- What Debezium needs in the platform database, created by a DBA-level role once per database:
-- a LOGIN REPLICATION role that can read the captured tables, and the publication it streams.
-- The connector then runs with publication.autocreate.mode=disabled (no table ownership needed).
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'allocguard_cdc') THEN
    CREATE ROLE allocguard_cdc LOGIN REPLICATION;
  END IF;
END $$;

GRANT USAGE ON SCHEMA public TO allocguard_cdc;
GRANT SELECT ON public.bookings, public.booking_table_assignments, public.allocations, public.table_holds,
  public.table_hold_members, public.observability_events, public.booking_assignment_idempotency,
  public.booking_state_history TO allocguard_cdc;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'allocguard_platform') THEN
    CREATE PUBLICATION allocguard_platform FOR TABLE public.bookings, public.booking_table_assignments,
      public.allocations, public.table_holds, public.table_hold_members, public.observability_events,
      public.booking_assignment_idempotency, public.booking_state_history;
  END IF;
END $$;
