-- Reference model of the platform's functions and triggers (shared/domain.md §1, §2, §6).

CREATE FUNCTION public.set_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.updated_at := now();
  RETURN NEW;
END $$;

-- bookings.start_at/end_at always follow booking_date + start/end time in the restaurant's timezone.
CREATE FUNCTION public.bookings_set_instants() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_tz text;
BEGIN
  SELECT r.timezone INTO v_tz FROM public.restaurants r WHERE r.id = NEW.restaurant_id;
  v_tz := coalesce(v_tz, 'UTC');
  NEW.start_at := (NEW.booking_date + NEW.start_time) AT TIME ZONE v_tz;
  NEW.end_at := (NEW.booking_date + NEW.end_time) AT TIME ZONE v_tz;
  IF NEW.end_at <= NEW.start_at THEN
    NEW.end_at := NEW.end_at + interval '1 day';
  END IF;
  RETURN NEW;
END $$;

CREATE FUNCTION public.bookings_set_reference() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.reference IS NULL OR NEW.reference = '' THEN
    NEW.reference := upper(substr(replace(gen_random_uuid()::text, '-', ''), 1, 10));
  END IF;
  RETURN NEW;
END $$;

-- Derived table status from the allocations whose window contains now().
CREATE FUNCTION public.refresh_table_status(p_table_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_status public.table_status := 'available';
BEGIN
  SELECT CASE
           WHEN bool_or(a.is_maintenance) THEN 'out_of_service'
           WHEN bool_or(b.status = 'checked_in') THEN 'occupied'
           WHEN count(*) > 0 THEN 'reserved'
           ELSE 'available'
         END::public.table_status
    INTO v_status
    FROM public.allocations a
    LEFT JOIN public.bookings b ON b.id = a.booking_id
   WHERE a.resource_type = 'table' AND a.resource_id = p_table_id AND NOT a.shadow AND a."window" @> now();
  UPDATE public.table_inventory t SET status = v_status, updated_at = now()
   WHERE t.id = p_table_id AND t.status IS DISTINCT FROM v_status;
END $$;

CREATE FUNCTION public.allocations_refresh_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP IN ('UPDATE', 'DELETE') AND OLD.resource_type = 'table' THEN
    PERFORM public.refresh_table_status(OLD.resource_id);
  END IF;
  IF TG_OP IN ('INSERT', 'UPDATE') AND NEW.resource_type = 'table' THEN
    PERFORM public.refresh_table_status(NEW.resource_id);
  END IF;
  RETURN NULL;
END $$;

-- Status changes refresh the tables of the booking and release nothing (the platform's behaviour).
CREATE FUNCTION public.booking_status_refresh_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_table uuid;
BEGIN
  FOR v_table IN SELECT bta.table_id FROM public.booking_table_assignments bta WHERE bta.booking_id = NEW.id LOOP
    PERFORM public.refresh_table_status(v_table);
  END LOOP;
  RETURN NULL;
END $$;

CREATE FUNCTION public.booking_table_assignments_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO public.audit_logs (entity, entity_id, action, metadata)
    VALUES ('booking_table_assignment', NEW.id::text, 'assigned',
            jsonb_build_object('booking_id', NEW.booking_id, 'table_id', NEW.table_id, 'slot_id', NEW.slot_id));
    RETURN NEW;
  END IF;
  INSERT INTO public.audit_logs (entity, entity_id, action, metadata)
  VALUES ('booking_table_assignment', OLD.id::text, 'unassigned',
          jsonb_build_object('booking_id', OLD.booking_id, 'table_id', OLD.table_id, 'slot_id', OLD.slot_id));
  RETURN OLD;
END $$;

-- Hold members mirror into table_hold_windows and into *shadow* allocations of the hold's booking.
CREATE FUNCTION public.sync_table_hold_windows() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  v_hold public.table_holds%ROWTYPE;
BEGIN
  IF TG_OP = 'INSERT' THEN
    SELECT * INTO v_hold FROM public.table_holds WHERE id = NEW.hold_id;
    INSERT INTO public.table_hold_windows (hold_id, table_id, restaurant_id, booking_id, start_at, end_at, expires_at)
    VALUES (v_hold.id, NEW.table_id, v_hold.restaurant_id, v_hold.booking_id, v_hold.start_at, v_hold.end_at,
            v_hold.expires_at)
    ON CONFLICT (hold_id, table_id) DO UPDATE
      SET restaurant_id = EXCLUDED.restaurant_id, booking_id = EXCLUDED.booking_id, start_at = EXCLUDED.start_at,
          end_at = EXCLUDED.end_at, expires_at = EXCLUDED.expires_at;
    INSERT INTO public.allocations (booking_id, restaurant_id, resource_type, resource_id, "window", shadow)
    VALUES (v_hold.booking_id, v_hold.restaurant_id, 'table', NEW.table_id,
            tstzrange(v_hold.start_at, v_hold.end_at, '[)'), true)
    ON CONFLICT ON CONSTRAINT allocations_booking_resource_key DO UPDATE
      SET "window" = EXCLUDED."window", restaurant_id = EXCLUDED.restaurant_id, shadow = true;
    RETURN NEW;
  END IF;
  DELETE FROM public.table_hold_windows w WHERE w.hold_id = OLD.hold_id AND w.table_id = OLD.table_id;
  -- When the hold row itself is being deleted (cascade), the subquery finds no parent: shadow rows survive.
  DELETE FROM public.allocations a
   WHERE a.resource_type = 'table' AND a.resource_id = OLD.table_id AND a.shadow
     AND a.booking_id IS NOT DISTINCT FROM (SELECT h.booking_id FROM public.table_holds h WHERE h.id = OLD.hold_id);
  RETURN OLD;
END $$;

CREATE FUNCTION public.update_table_hold_windows() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE public.table_hold_windows w
     SET start_at = NEW.start_at, end_at = NEW.end_at, expires_at = NEW.expires_at, booking_id = NEW.booking_id
   WHERE w.hold_id = NEW.id;
  UPDATE public.allocations a
     SET "window" = tstzrange(NEW.start_at, NEW.end_at, '[)'), booking_id = NEW.booking_id
   WHERE a.shadow AND a.resource_type = 'table' AND a.booking_id IS NOT DISTINCT FROM OLD.booking_id
     AND a.resource_id IN (SELECT m.table_id FROM public.table_hold_members m WHERE m.hold_id = NEW.id);
  RETURN NEW;
END $$;

CREATE TRIGGER bookings_set_instants BEFORE INSERT OR UPDATE OF booking_date, start_time, end_time, restaurant_id
  ON public.bookings FOR EACH ROW EXECUTE FUNCTION public.bookings_set_instants();
CREATE TRIGGER bookings_set_reference BEFORE INSERT ON public.bookings
  FOR EACH ROW EXECUTE FUNCTION public.bookings_set_reference();
CREATE TRIGGER bookings_updated_at BEFORE UPDATE ON public.bookings
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER trg_booking_status_refresh AFTER UPDATE OF status ON public.bookings
  FOR EACH ROW EXECUTE FUNCTION public.booking_status_refresh_trigger();
CREATE TRIGGER booking_table_assignments_audit AFTER INSERT OR DELETE ON public.booking_table_assignments
  FOR EACH ROW EXECUTE FUNCTION public.booking_table_assignments_audit();
CREATE TRIGGER allocations_updated_at BEFORE UPDATE ON public.allocations
  FOR EACH ROW EXECUTE FUNCTION public.set_updated_at();
CREATE TRIGGER trg_allocations_refresh AFTER INSERT OR UPDATE OR DELETE ON public.allocations
  FOR EACH ROW EXECUTE FUNCTION public.allocations_refresh_trigger();
CREATE TRIGGER sync_table_hold_windows AFTER INSERT OR DELETE ON public.table_hold_members
  FOR EACH ROW EXECUTE FUNCTION public.sync_table_hold_windows();
CREATE TRIGGER update_table_hold_windows AFTER UPDATE OF start_at, end_at, expires_at, booking_id ON public.table_holds
  FOR EACH ROW EXECUTE FUNCTION public.update_table_hold_windows();

CREATE FUNCTION public.get_or_create_booking_slot(
  p_restaurant_id uuid, p_slot_date date, p_slot_time time, p_default_capacity integer DEFAULT 999
) RETURNS uuid LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_id uuid;
BEGIN
  INSERT INTO public.booking_slots (restaurant_id, slot_date, slot_time, available_capacity)
  VALUES (p_restaurant_id, p_slot_date, p_slot_time, p_default_capacity)
  ON CONFLICT ON CONSTRAINT booking_slots_restaurant_slot_key DO UPDATE SET updated_at = now()
  RETURNING id INTO v_id;
  RETURN v_id;
END $$;

-- Simplified service-period check: the booking's day; limits from restaurants.max_covers/max_parties.
CREATE FUNCTION public.validate_booking_capacity_after_assignment(p_booking_id uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_restaurant public.restaurants%ROWTYPE;
  v_date date;
  v_covers integer;
  v_parties integer;
BEGIN
  SELECT r.* INTO v_restaurant FROM public.restaurants r JOIN public.bookings b ON b.restaurant_id = r.id
   WHERE b.id = p_booking_id;
  SELECT b.booking_date INTO v_date FROM public.bookings b WHERE b.id = p_booking_id;
  SELECT coalesce(sum(b.party_size), 0), count(*) INTO v_covers, v_parties
    FROM public.bookings b
   WHERE b.restaurant_id = v_restaurant.id AND b.booking_date = v_date
     AND b.status IN ('confirmed', 'pending', 'checked_in');
  IF (v_restaurant.max_covers IS NOT NULL AND v_covers > v_restaurant.max_covers)
     OR (v_restaurant.max_parties IS NOT NULL AND v_parties > v_restaurant.max_parties) THEN
    RAISE EXCEPTION 'capacity_exceeded_post_assignment' USING ERRCODE = 'P0001',
      DETAIL = format('Capacity exceeded after assignment: covers %s/%s, parties %s/%s',
                      v_covers, coalesce(v_restaurant.max_covers::text, '-'),
                      v_parties, coalesce(v_restaurant.max_parties::text, '-')),
      HINT = 'Release tables or adjust capacity overrides before retrying.';
  END IF;
END $$;

CREATE FUNCTION public.assign_tables_atomic_v2(
  p_booking_id uuid,
  p_table_ids uuid[],
  p_idempotency_key text DEFAULT NULL,
  p_require_adjacency boolean DEFAULT false,
  p_assigned_by uuid DEFAULT NULL,
  p_start_at timestamptz DEFAULT NULL,
  p_end_at timestamptz DEFAULT NULL
) RETURNS TABLE(table_id uuid, start_at timestamptz, end_at timestamptz, merge_group_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
DECLARE
  v_table_ids uuid[];
  v_hash text;
  v_booking record;
  v_start timestamptz;
  v_end timestamptz;
  v_window tstzrange;
  v_zone uuid;
  v_count integer := 0;
  v_tbl record;
  v_tid uuid;
  v_other_zone uuid;
  v_ledger public.booking_assignment_idempotency%ROWTYPE;
  v_hold_id uuid;
  v_slot uuid;
  v_merge uuid;
  v_alloc uuid;
BEGIN
  IF p_table_ids IS NULL OR cardinality(p_table_ids) = 0 THEN
    RAISE EXCEPTION 'assign_tables_atomic_v2 requires at least one table id' USING ERRCODE = '23514';
  END IF;
  SELECT array_agg(DISTINCT t ORDER BY t) INTO v_table_ids FROM unnest(p_table_ids) AS t WHERE t IS NOT NULL;
  IF v_table_ids IS NULL THEN
    RAISE EXCEPTION 'assign_tables_atomic_v2 requires at least one valid table id' USING ERRCODE = '23514';
  END IF;
  v_hash := md5(array_to_string(v_table_ids, ','));

  -- 2. lock the booking (its status is deliberately not checked, as on the platform)
  SELECT b.*, r.timezone AS restaurant_timezone INTO v_booking
    FROM public.bookings b LEFT JOIN public.restaurants r ON r.id = b.restaurant_id
   WHERE b.id = p_booking_id
   FOR UPDATE OF b;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'Booking % not found', p_booking_id USING ERRCODE = 'P0002';
  END IF;

  -- 3. window
  IF p_start_at IS NOT NULL OR p_end_at IS NOT NULL THEN
    IF p_start_at IS NULL OR p_end_at IS NULL THEN
      RAISE EXCEPTION 'assign_tables_atomic_v2 requires both start and end when providing custom window'
        USING ERRCODE = '22023';
    END IF;
    v_start := p_start_at;
    v_end := p_end_at;
  ELSIF v_booking.start_at IS NOT NULL AND v_booking.end_at IS NOT NULL THEN
    v_start := v_booking.start_at;
    v_end := v_booking.end_at;
  ELSIF v_booking.booking_date IS NOT NULL AND v_booking.start_time IS NOT NULL AND v_booking.end_time IS NOT NULL THEN
    v_start := (v_booking.booking_date + v_booking.start_time) AT TIME ZONE coalesce(v_booking.restaurant_timezone, 'UTC');
    v_end := (v_booking.booking_date + v_booking.end_time) AT TIME ZONE coalesce(v_booking.restaurant_timezone, 'UTC');
  ELSE
    RAISE EXCEPTION 'Booking % missing start/end window', p_booking_id USING ERRCODE = '22000';
  END IF;
  IF v_start >= v_end THEN
    RAISE EXCEPTION 'Booking % has invalid time window', p_booking_id USING ERRCODE = '22000';
  END IF;
  v_window := tstzrange(v_start, v_end, '[)');

  -- 4. lock and check the tables
  FOR v_tbl IN
    SELECT ti.id, ti.restaurant_id, ti.zone_id, ti.active, ti.mobility
      FROM public.table_inventory ti WHERE ti.id = ANY (v_table_ids) ORDER BY ti.id FOR UPDATE
  LOOP
    v_count := v_count + 1;
    IF v_tbl.restaurant_id <> v_booking.restaurant_id THEN
      RAISE EXCEPTION 'Table % belongs to a different restaurant', v_tbl.id USING ERRCODE = '23503';
    END IF;
    IF v_tbl.zone_id IS NULL THEN
      RAISE EXCEPTION 'Table % is not assigned to a zone', v_tbl.id USING ERRCODE = '23514';
    END IF;
    IF NOT v_tbl.active THEN
      RAISE EXCEPTION 'Table % is inactive', v_tbl.id USING ERRCODE = '23514';
    END IF;
    IF v_zone IS NULL THEN
      v_zone := v_tbl.zone_id;
    ELSIF v_zone <> v_tbl.zone_id THEN
      RAISE EXCEPTION 'All tables must belong to the same zone (found %, expected %)', v_tbl.zone_id, v_zone
        USING ERRCODE = '23514';
    END IF;
    IF cardinality(v_table_ids) > 1 AND v_tbl.mobility <> 'movable' THEN
      RAISE EXCEPTION 'Merged assignments require movable tables (% is %)', v_tbl.id, v_tbl.mobility
        USING ERRCODE = '23514';
    END IF;
  END LOOP;
  IF v_count <> cardinality(v_table_ids) THEN
    RAISE EXCEPTION 'Unable to load all requested tables for booking %', p_booking_id USING ERRCODE = 'P0002';
  END IF;

  -- 5. zone lock
  SELECT ti.zone_id INTO v_other_zone
    FROM public.booking_table_assignments bta JOIN public.table_inventory ti ON ti.id = bta.table_id
   WHERE bta.booking_id = p_booking_id AND ti.zone_id <> v_zone
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'Booking % already has assignments in a different zone', p_booking_id USING ERRCODE = '23514';
  END IF;
  IF v_booking.assigned_zone_id IS NULL THEN
    UPDATE public.bookings b SET assigned_zone_id = v_zone, updated_at = now() WHERE b.id = p_booking_id;
  ELSIF v_booking.assigned_zone_id <> v_zone THEN
    RAISE EXCEPTION 'Booking % locked to zone %, cannot assign zone %', p_booking_id, v_booking.assigned_zone_id, v_zone
      USING ERRCODE = '23514';
  END IF;

  -- 6. adjacency
  IF p_require_adjacency AND cardinality(v_table_ids) > 1 THEN
    FOREACH v_tid IN ARRAY v_table_ids LOOP
      IF NOT EXISTS (
        SELECT 1 FROM public.table_adjacencies ta
         WHERE (ta.table_a = v_tid AND ta.table_b = ANY (v_table_ids))
            OR (ta.table_b = v_tid AND ta.table_a = ANY (v_table_ids))
      ) THEN
        RAISE EXCEPTION 'Table % is not adjacent to the selected set', v_tid USING ERRCODE = '23514';
      END IF;
    END LOOP;
  END IF;

  -- 7. serialize assigns per zone and hour
  PERFORM pg_advisory_xact_lock(hashtext(v_zone::text),
                                (extract(epoch FROM date_trunc('hour', v_start))::bigint / 60)::integer);

  -- 8. idempotency ledger: a known key returns the rows that carry it and writes nothing more
  IF p_idempotency_key IS NOT NULL THEN
    SELECT * INTO v_ledger FROM public.booking_assignment_idempotency l
     WHERE l.booking_id = p_booking_id AND l.idempotency_key = p_idempotency_key;
    IF FOUND THEN
      IF v_ledger.table_set_hash IS DISTINCT FROM v_hash THEN
        RAISE EXCEPTION 'assign_tables_atomic_v2 idempotency mismatch for booking %', p_booking_id
          USING ERRCODE = 'P0003', DETAIL = 'Idempotency key reuse detected with a different table set';
      END IF;
      RETURN QUERY
        SELECT bta.table_id, bta.start_at, bta.end_at, bta.merge_group_id
          FROM public.booking_table_assignments bta
         WHERE bta.booking_id = p_booking_id AND bta.idempotency_key = p_idempotency_key;
      RETURN;
    END IF;
  END IF;

  -- 9. active holds of other bookings
  SELECT w.hold_id INTO v_hold_id
    FROM public.table_hold_windows w JOIN public.table_holds h ON h.id = w.hold_id
   WHERE w.table_id = ANY (v_table_ids) AND w.expires_at > now() AND w.hold_window && v_window
     AND (h.booking_id IS NULL OR h.booking_id <> p_booking_id)
   LIMIT 1;
  IF FOUND THEN
    RAISE EXCEPTION 'Hold conflict prevents assignment for booking %', p_booking_id USING ERRCODE = 'P0001',
      DETAIL = format('Hold %s overlaps requested window', v_hold_id),
      HINT = 'Retry after hold expiration or confirm existing hold.';
  END IF;

  -- 10. slot
  SELECT s.id INTO v_slot FROM public.booking_slots s
   WHERE s.restaurant_id = v_booking.restaurant_id AND s.slot_date = v_booking.booking_date
     AND s.slot_time = v_booking.start_time;
  IF NOT FOUND THEN
    v_slot := public.get_or_create_booking_slot(v_booking.restaurant_id, v_booking.booking_date,
                                                v_booking.start_time, 999);
  END IF;

  -- 11. merge group for several tables
  IF cardinality(v_table_ids) > 1 THEN
    v_merge := gen_random_uuid();
    BEGIN
      INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id, "window", created_by,
                                      shadow)
      VALUES (v_merge, p_booking_id, v_booking.restaurant_id, 'merge_group', v_merge, v_window, p_assigned_by, false);
    EXCEPTION WHEN unique_violation OR exclusion_violation THEN
      RAISE EXCEPTION 'allocations_no_overlap' USING ERRCODE = 'P0001',
        DETAIL = format('Merge group overlaps requested window for booking %s', p_booking_id);
    END;
  END IF;

  -- 12. one allocation (reusing the booking's own row) and one assignment per table
  FOREACH v_tid IN ARRAY v_table_ids LOOP
    BEGIN
      INSERT INTO public.allocations (booking_id, restaurant_id, resource_type, resource_id, "window", created_by, shadow)
      VALUES (p_booking_id, v_booking.restaurant_id, 'table', v_tid, v_window, p_assigned_by, false)
      ON CONFLICT ON CONSTRAINT allocations_booking_resource_key DO UPDATE
        SET "window" = EXCLUDED."window", created_by = EXCLUDED.created_by, shadow = false, updated_at = now()
      RETURNING id INTO v_alloc;
    EXCEPTION WHEN unique_violation OR exclusion_violation THEN
      RAISE EXCEPTION 'allocations_no_overlap' USING ERRCODE = 'P0001',
        DETAIL = format('Resource %s overlaps requested window for booking %s', v_tid, p_booking_id);
    END;
    BEGIN
      INSERT INTO public.booking_table_assignments AS bta
        (booking_id, table_id, slot_id, assigned_at, assigned_by, idempotency_key, start_at, end_at, allocation_id,
         merge_group_id)
      VALUES (p_booking_id, v_tid, v_slot, now(), p_assigned_by, p_idempotency_key, v_start, v_end, v_alloc, v_merge)
      ON CONFLICT (booking_id, table_id) DO UPDATE
        SET slot_id = EXCLUDED.slot_id, assigned_at = EXCLUDED.assigned_at, assigned_by = EXCLUDED.assigned_by,
            idempotency_key = EXCLUDED.idempotency_key, start_at = EXCLUDED.start_at, end_at = EXCLUDED.end_at,
            allocation_id = EXCLUDED.allocation_id, merge_group_id = EXCLUDED.merge_group_id, updated_at = now();
    EXCEPTION WHEN unique_violation THEN
      UPDATE public.booking_table_assignments bta
         SET assigned_at = now(), idempotency_key = p_idempotency_key, start_at = v_start, end_at = v_end,
             allocation_id = v_alloc, merge_group_id = v_merge, updated_at = now()
       WHERE bta.booking_id = p_booking_id AND bta.table_id = v_tid;
      IF NOT FOUND THEN
        RAISE EXCEPTION 'assign_tables_atomic_v2 assignment duplicate for table %', v_tid USING ERRCODE = 'P0001';
      END IF;
    END;
    PERFORM public.refresh_table_status(v_tid);
    table_id := v_tid;
    start_at := v_start;
    end_at := v_end;
    merge_group_id := v_merge;
    RETURN NEXT;
  END LOOP;

  -- 13. ledger
  IF p_idempotency_key IS NOT NULL THEN
    INSERT INTO public.booking_assignment_idempotency AS l
      (booking_id, idempotency_key, table_ids, assignment_window, merge_group_allocation_id, table_set_hash)
    VALUES (p_booking_id, p_idempotency_key, v_table_ids, v_window, v_merge, v_hash)
    ON CONFLICT (booking_id, idempotency_key) DO UPDATE
      SET table_ids = EXCLUDED.table_ids, assignment_window = EXCLUDED.assignment_window,
          merge_group_allocation_id = EXCLUDED.merge_group_allocation_id, table_set_hash = EXCLUDED.table_set_hash;
  END IF;

  -- 14. post-assignment capacity check
  IF coalesce(current_setting('app.capacity.post_assignment.enabled', true), 'on') <> 'off' THEN
    PERFORM public.validate_booking_capacity_after_assignment(p_booking_id);
  END IF;
END $$;

-- The legacy 5-argument overload still exists on the platform: a call naming five or fewer
-- arguments is ambiguous between the two, which is why callers must pass all seven.
CREATE FUNCTION public.assign_tables_atomic_v2(
  p_booking_id uuid,
  p_table_ids uuid[],
  p_idempotency_key text DEFAULT NULL,
  p_require_adjacency boolean DEFAULT false,
  p_assigned_by uuid DEFAULT NULL
) RETURNS TABLE(table_id uuid, start_at timestamptz, end_at timestamptz, merge_group_id uuid)
LANGUAGE sql SECURITY DEFINER SET search_path = public AS $$
  SELECT * FROM public.assign_tables_atomic_v2(p_booking_id, p_table_ids, p_idempotency_key, p_require_adjacency,
                                                p_assigned_by, NULL::timestamptz, NULL::timestamptz);
$$;

-- The fixed version (2025-11-16): removes the assignments and the booking's table allocations together.
CREATE FUNCTION public.unassign_tables_atomic(p_booking_id uuid, p_table_ids uuid[] DEFAULT NULL)
RETURNS TABLE(table_id uuid)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_removed uuid[];
  v_tid uuid;
BEGIN
  PERFORM 1 FROM public.bookings b WHERE b.id = p_booking_id FOR UPDATE;
  WITH gone AS (
    DELETE FROM public.booking_table_assignments bta
     WHERE bta.booking_id = p_booking_id AND (p_table_ids IS NULL OR bta.table_id = ANY (p_table_ids))
    RETURNING bta.table_id
  )
  SELECT array_agg(gone.table_id) INTO v_removed FROM gone;
  DELETE FROM public.allocations a
   WHERE a.booking_id = p_booking_id AND a.resource_type = 'table'
     AND (p_table_ids IS NULL OR a.resource_id = ANY (p_table_ids));
  IF v_removed IS NOT NULL THEN
    FOREACH v_tid IN ARRAY v_removed LOOP
      PERFORM public.refresh_table_status(v_tid);
      table_id := v_tid;
      RETURN NEXT;
    END LOOP;
  END IF;
END $$;

CREATE FUNCTION public.apply_booking_state_transition(
  p_booking_id uuid,
  p_status public.booking_status,
  p_checked_in_at timestamptz,
  p_checked_out_at timestamptz,
  p_updated_at timestamptz,
  p_history_from public.booking_status,
  p_history_to public.booking_status,
  p_history_changed_by uuid,
  p_history_changed_at timestamptz,
  p_history_reason text,
  p_history_metadata jsonb DEFAULT '{}'::jsonb
) RETURNS TABLE(status public.booking_status, checked_in_at timestamptz, checked_out_at timestamptz,
                updated_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
#variable_conflict use_column
BEGIN
  UPDATE public.bookings b
     SET status = p_status, checked_in_at = p_checked_in_at, checked_out_at = p_checked_out_at,
         updated_at = coalesce(p_updated_at, now())
   WHERE b.id = p_booking_id;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'Booking % not found', p_booking_id USING ERRCODE = 'P0002';
  END IF;
  IF p_history_to IS NOT NULL THEN
    INSERT INTO public.booking_state_history (booking_id, from_status, to_status, changed_by, changed_at, reason,
                                              metadata)
    VALUES (p_booking_id, p_history_from, p_history_to, p_history_changed_by, coalesce(p_history_changed_at, now()),
            p_history_reason, coalesce(p_history_metadata, '{}'::jsonb));
  END IF;
  RETURN QUERY
    SELECT b.status, b.checked_in_at, b.checked_out_at, b.updated_at FROM public.bookings b WHERE b.id = p_booking_id;
END $$;

-- The platform's history pruner: archive then delete rows whose window ended before the cutoff.
CREATE FUNCTION public.prune_allocations_history(p_cutoff timestamptz, p_limit integer DEFAULT 500)
RETURNS TABLE(archived_count integer, deleted_count integer)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
  v_ids uuid[];
BEGIN
  SELECT array_agg(x.id) INTO v_ids FROM (
    SELECT a.id FROM public.allocations a WHERE upper(a."window") < p_cutoff ORDER BY a.updated_at LIMIT p_limit
  ) x;
  IF v_ids IS NULL THEN
    archived_count := 0;
    deleted_count := 0;
    RETURN NEXT;
    RETURN;
  END IF;
  INSERT INTO public.allocations_archive
    (id, booking_id, resource_type, resource_id, created_at, updated_at, shadow, restaurant_id, "window", created_by,
     is_maintenance)
  SELECT a.id, a.booking_id, a.resource_type, a.resource_id, a.created_at, a.updated_at, a.shadow, a.restaurant_id,
         a."window", a.created_by, a.is_maintenance
    FROM public.allocations a WHERE a.id = ANY (v_ids)
  ON CONFLICT (id) DO NOTHING;
  GET DIAGNOSTICS archived_count = ROW_COUNT;
  DELETE FROM public.allocations a WHERE a.id = ANY (v_ids);
  GET DIAGNOSTICS deleted_count = ROW_COUNT;
  RETURN NEXT;
END $$;
