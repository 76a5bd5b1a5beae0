-- The platform's security model, as hostile as the real one (shared/domain.md §7.1).
--
-- Row-level security is enabled on every table allocguard reads or writes except observability_events. Policies
-- target the hosting service's roles (authenticated, service_role) with tenant checks through
-- restaurant_memberships; one policy on booking_table_assignments applies to PUBLIC and runs a sub-query on
-- bookings and customers. Consequences for any other role that is neither superuser nor BYPASSRLS: a SELECT is
-- silently filtered to 0 rows, and reading booking_table_assignments fails with "permission denied for table
-- customers". BYPASSRLS is a role attribute and is not inherited through GRANT.
--
-- Roles are cluster-wide, so they are created only when missing (several databases may load this model).

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN;
  END IF;
  -- the platform's own back end (the app, its jobs): full access, RLS bypassed, as on the hosting service.
  -- LOGIN so that the local stack's platform simulator can write as the platform does (trust auth, loopback).
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role LOGIN BYPASSRLS;
  END IF;
END $$;

CREATE SCHEMA IF NOT EXISTS auth;
CREATE OR REPLACE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE AS $$
  SELECT nullif(current_setting('request.jwt.claim.sub', true), '')::uuid
$$;
GRANT USAGE ON SCHEMA auth TO PUBLIC;

GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT ALL ON ALL TABLES IN SCHEMA public TO service_role;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO service_role;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO authenticated;

DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'restaurants', 'zones', 'table_inventory', 'table_adjacencies', 'booking_slots', 'customers',
    'restaurant_memberships', 'bookings', 'booking_table_assignments', 'allocations', 'allocations_archive',
    'table_holds', 'table_hold_members', 'table_hold_windows', 'booking_assignment_idempotency',
    'booking_state_history', 'audit_logs'
  ] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', t);
    EXECUTE format('CREATE POLICY service_role_all ON public.%I TO service_role USING (true) WITH CHECK (true)', t);
  END LOOP;
END $$;

-- Tenant reads for staff: rows of the restaurants the signed-in user works for.
CREATE POLICY tenant_read ON public.restaurants FOR SELECT TO authenticated
  USING (id IN (SELECT m.restaurant_id FROM public.restaurant_memberships m WHERE m.user_id = auth.uid()));
DO $$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY[
    'zones', 'table_inventory', 'booking_slots', 'customers', 'bookings', 'allocations', 'allocations_archive',
    'table_holds', 'table_hold_windows'
  ] LOOP
    EXECUTE format(
      'CREATE POLICY tenant_read ON public.%I FOR SELECT TO authenticated USING (restaurant_id IN '
      '(SELECT m.restaurant_id FROM public.restaurant_memberships m WHERE m.user_id = auth.uid()))', t);
  END LOOP;
END $$;
CREATE POLICY own_memberships ON public.restaurant_memberships FOR SELECT TO authenticated
  USING (user_id = auth.uid());
CREATE POLICY tenant_read ON public.booking_table_assignments FOR SELECT TO authenticated
  USING (booking_id IN (SELECT b.id FROM public.bookings b));
CREATE POLICY tenant_read ON public.table_hold_members FOR SELECT TO authenticated
  USING (hold_id IN (SELECT h.id FROM public.table_holds h));
CREATE POLICY tenant_read ON public.table_adjacencies FOR SELECT TO authenticated
  USING (table_a IN (SELECT t.id FROM public.table_inventory t));
CREATE POLICY tenant_read ON public.booking_assignment_idempotency FOR SELECT TO authenticated
  USING (booking_id IN (SELECT b.id FROM public.bookings b));
CREATE POLICY tenant_read ON public.booking_state_history FOR SELECT TO authenticated
  USING (booking_id IN (SELECT b.id FROM public.bookings b));

-- Guests see their own bookings and customer row.
CREATE POLICY guest_own_bookings ON public.bookings FOR SELECT TO authenticated
  USING (customer_id IN (SELECT c.id FROM public.customers c WHERE c.auth_user_id = auth.uid()));
CREATE POLICY guest_own_customer ON public.customers FOR SELECT TO authenticated
  USING (auth_user_id = auth.uid());

-- The one that bites: no TO clause, so it applies to PUBLIC — every role that reads booking_table_assignments
-- runs its sub-query on bookings and customers with its own privileges.
CREATE POLICY "Guests can view their table assignments" ON public.booking_table_assignments FOR SELECT
  USING (EXISTS (SELECT 1 FROM public.bookings b JOIN public.customers c ON c.id = b.customer_id
                  WHERE b.id = booking_table_assignments.booking_id AND c.auth_user_id = auth.uid()));
