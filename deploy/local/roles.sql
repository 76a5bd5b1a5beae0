-- Local stack only: the platform's back-end role (service_role, BYPASSRLS, from the reference model) may read
-- and reset allocguard's records, so the simulator can replay a scenario and the tests can check the records
-- without connecting as the cluster's owner. Nothing like this is granted at a real platform.
GRANT USAGE ON SCHEMA allocguard TO service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA allocguard TO service_role;

-- Time passing, for the simulator: make a booking's allocations look older without waiting (the platform's
-- updated_at trigger is bypassed for this one statement). Owned by the cluster owner, callable only by the
-- platform's service role on the local stack.
CREATE SCHEMA IF NOT EXISTS local_sim;
CREATE OR REPLACE FUNCTION local_sim.age_allocations(p_booking_id uuid, p_by interval) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_count integer;
BEGIN
  SET LOCAL session_replication_role = replica;
  UPDATE public.allocations SET updated_at = updated_at - p_by WHERE booking_id = p_booking_id;
  GET DIAGNOSTICS v_count = ROW_COUNT;
  SET LOCAL session_replication_role = origin;
  RETURN v_count;
END $$;
REVOKE ALL ON FUNCTION local_sim.age_allocations(uuid, interval) FROM PUBLIC;
GRANT USAGE ON SCHEMA local_sim TO service_role;
GRANT EXECUTE ON FUNCTION local_sim.age_allocations(uuid, interval) TO service_role;
