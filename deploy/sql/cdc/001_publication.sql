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

-- Row-level security (domain.md §7.1): streaming is not filtered by policies, but the initial snapshot is a
-- plain SELECT as this role — without a policy of its own it reads 0 rows with no error, and the platform's
-- PUBLIC policy on booking_table_assignments fails it with "permission denied for table customers". With a
-- `USING (true)` policy for the role, PostgreSQL folds that sub-query away: no privilege on customers is needed.
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'bookings', 'booking_table_assignments', 'allocations', 'table_holds', 'table_hold_members',
    'observability_events', 'booking_assignment_idempotency', 'booking_state_history'
  ] LOOP
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM pg_policies WHERE schemaname = 'public' AND tablename = t AND policyname = 'allocguard_cdc_snapshot'
    );
    EXECUTE format('CREATE POLICY allocguard_cdc_snapshot ON public.%I FOR SELECT TO allocguard_cdc USING (true)', t);
  END LOOP;
END $$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'allocguard_platform') THEN
    CREATE PUBLICATION allocguard_platform FOR TABLE public.bookings, public.booking_table_assignments,
      public.allocations, public.table_holds, public.table_hold_members, public.observability_events,
      public.booking_assignment_idempotency, public.booking_state_history;
  END IF;
END $$;
