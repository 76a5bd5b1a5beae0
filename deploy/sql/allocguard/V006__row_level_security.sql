-- Least privilege that works under the platform's row-level security (shared/domain.md §7.1).
--
-- Policies, unlike the BYPASSRLS attribute, apply to every member of the role they name: a login role that is
-- granted allocguard_remediator sees exactly what these policies allow, and nothing else changes for the
-- platform's own roles. Creating a policy needs ownership of the table (the operator who runs `db init`); where
-- that is impossible, README "Deploying at the platform" lists the statements to ask the owner for.
-- Tables without RLS enabled ignore policies, so this is safe on a platform that has none.

-- Read what the evidence and the executor read; lock (FOR UPDATE needs UPDATE policies) the owner bookings and
-- the allocations; delete proven orphans and stale ledger rows; archive.
DO $$
DECLARE
  spec text[];
BEGIN
  FOREACH spec SLICE 1 IN ARRAY ARRAY[
    ['bookings', 'SELECT'], ['bookings', 'UPDATE'],
    ['booking_table_assignments', 'SELECT'],
    ['allocations', 'SELECT'], ['allocations', 'UPDATE'], ['allocations', 'DELETE'],
    ['allocations_archive', 'SELECT'], ['allocations_archive', 'INSERT'],
    ['table_holds', 'SELECT'], ['table_hold_members', 'SELECT'], ['table_inventory', 'SELECT'],
    ['booking_assignment_idempotency', 'SELECT'], ['booking_assignment_idempotency', 'DELETE']
  ] LOOP
    CONTINUE WHEN to_regclass('public.' || spec[1]) IS NULL;
    CONTINUE WHEN EXISTS (
      SELECT 1 FROM pg_policies
       WHERE schemaname = 'public' AND tablename = spec[1] AND policyname = 'allocguard_remediator_' || lower(spec[2])
    );
    EXECUTE format(
      'CREATE POLICY %I ON public.%I FOR %s TO allocguard_remediator %s',
      'allocguard_remediator_' || lower(spec[2]),
      spec[1],
      spec[2],
      CASE spec[2]
        WHEN 'INSERT' THEN 'WITH CHECK (true)'
        WHEN 'UPDATE' THEN 'USING (true) WITH CHECK (true)'
        ELSE 'USING (true)'
      END
    );
  END LOOP;
END $$;

-- Guest data stays out of reach: on bookings, only the columns the evidence reads — never names, emails, phones,
-- notes, details. No privilege on customers is needed either: the platform's PUBLIC policy on
-- booking_table_assignments runs a sub-query on bookings and customers with the reader's privileges and fails
-- ("permission denied for table customers") for a role with no policy of its own; OR-ed with the `USING (true)`
-- policies above, PostgreSQL folds that sub-query away and never touches customers.
REVOKE SELECT ON public.bookings FROM allocguard_remediator;
GRANT SELECT (id, restaurant_id, status, start_at, end_at, party_size)
  ON public.bookings TO allocguard_remediator;

-- the hold memory is looked up by booking for every failure that names no hold
CREATE INDEX IF NOT EXISTS hold_observations_booking_idx
  ON allocguard.hold_observations (booking_id, observed_at DESC);
