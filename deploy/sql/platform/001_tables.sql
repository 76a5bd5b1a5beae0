-- Reference model of the booking platform's tables (see shared/domain.md §1).
-- Written from the documented facts, for local stacks and tests; a live platform wins where they differ.
-- Simplifications, on purpose: created_by/assigned_by carry no FK to an auth schema, no capacity_outbox /
-- booking_confirmation_results (allocguard neither reads nor writes them). As hostile as the platform
-- (domain.md §7.1): guest contact data in `customers` and `bookings`, row-level security with the platform's
-- policy shapes (003_security.sql), and the captured tables keep REPLICA IDENTITY DEFAULT.

CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TYPE public.booking_status AS ENUM (
  'confirmed', 'pending', 'cancelled', 'completed', 'PRIORITY_WAITLIST', 'no_show', 'pending_allocation', 'checked_in'
);
CREATE TYPE public.booking_assignment_state AS ENUM (
  'created', 'capacity_verified', 'assignment_pending', 'assignment_in_progress', 'assigned', 'confirmed', 'failed',
  'manual_review'
);
CREATE TYPE public.table_status AS ENUM ('available', 'reserved', 'occupied', 'out_of_service');
CREATE TYPE public.table_category AS ENUM ('bar', 'dining', 'lounge', 'patio', 'private');
CREATE TYPE public.table_mobility AS ENUM ('movable', 'fixed');

CREATE TABLE public.restaurants (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name text NOT NULL,
  slug text UNIQUE NOT NULL,
  timezone text NOT NULL DEFAULT 'Europe/London',
  -- used by validate_booking_capacity_after_assignment; NULL means unlimited
  max_covers integer,
  max_parties integer,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.zones (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.allowed_capacities (
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  capacity integer NOT NULL CHECK (capacity > 0),
  PRIMARY KEY (restaurant_id, capacity)
);

CREATE TABLE public.table_inventory (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  table_number text NOT NULL,
  capacity integer NOT NULL,
  min_party_size integer NOT NULL DEFAULT 1,
  max_party_size integer,
  section text,
  status public.table_status NOT NULL DEFAULT 'available',
  position jsonb,
  notes text,
  zone_id uuid NOT NULL REFERENCES public.zones (id) ON DELETE RESTRICT,
  category public.table_category NOT NULL DEFAULT 'dining',
  seating_type text NOT NULL DEFAULT 'standard',
  mobility public.table_mobility NOT NULL DEFAULT 'movable',
  active boolean NOT NULL DEFAULT true,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT table_inventory_restaurant_table_number_key UNIQUE (restaurant_id, table_number),
  CONSTRAINT table_inventory_allowed_capacity_fkey FOREIGN KEY (restaurant_id, capacity)
    REFERENCES public.allowed_capacities (restaurant_id, capacity)
);

CREATE TABLE public.table_adjacencies (
  table_a uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE CASCADE,
  table_b uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (table_a, table_b),
  CONSTRAINT table_adjacencies_not_self CHECK (table_a <> table_b)
);

CREATE TABLE public.booking_slots (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  slot_date date NOT NULL,
  slot_time time NOT NULL,
  available_capacity integer NOT NULL DEFAULT 999,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT booking_slots_restaurant_slot_key UNIQUE (restaurant_id, slot_date, slot_time)
);

CREATE TABLE public.booking_occasions (
  key text PRIMARY KEY,
  label text NOT NULL,
  short_label text
);
INSERT INTO public.booking_occasions (key, label, short_label)
VALUES ('dinner', 'Dinner', 'Din'), ('lunch', 'Lunch', 'Lun'), ('drinks', 'Drinks', 'Drk');

-- Guests and their contact data: allocguard never reads these columns (only the platform's policies do,
-- through their sub-queries on id and auth_user_id).
CREATE TABLE public.customers (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  auth_user_id uuid,
  full_name text NOT NULL,
  email text NOT NULL,
  phone text NOT NULL,
  marketing_opt_in boolean NOT NULL DEFAULT false,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

-- Who works for which restaurant: the tenant check of the platform's policies.
CREATE TABLE public.restaurant_memberships (
  user_id uuid NOT NULL,
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  role text NOT NULL DEFAULT 'staff',
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, restaurant_id)
);

CREATE TABLE public.bookings (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  customer_id uuid NOT NULL,
  booking_date date NOT NULL,
  start_time time NOT NULL,
  end_time time NOT NULL,
  start_at timestamptz,
  end_at timestamptz,
  party_size integer NOT NULL CHECK (party_size > 0),
  status public.booking_status NOT NULL DEFAULT 'confirmed',
  reference text UNIQUE NOT NULL,
  source text DEFAULT 'web',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  booking_type text REFERENCES public.booking_occasions (key),
  seating_preference text NOT NULL DEFAULT 'any',
  customer_name text NOT NULL,
  customer_email text NOT NULL,
  customer_phone text NOT NULL,
  notes text,
  details jsonb,
  auto_assign_idempotency_key text,
  auto_assign_last_result jsonb,
  idempotency_key text,
  client_request_id text NOT NULL DEFAULT gen_random_uuid()::text,
  pending_ref text,
  checked_in_at timestamptz,
  checked_out_at timestamptz,
  table_id uuid REFERENCES public.table_inventory (id) ON DELETE SET NULL,
  assigned_zone_id uuid REFERENCES public.zones (id) ON DELETE SET NULL,
  loyalty_points_awarded integer,
  marketing_opt_in boolean NOT NULL DEFAULT false,
  assignment_state public.booking_assignment_state NOT NULL DEFAULT 'created',
  assignment_state_version integer NOT NULL DEFAULT 1,
  assignment_strategy text,
  CONSTRAINT chk_time_order CHECK (start_at < end_at),
  CONSTRAINT bookings_lifecycle_timestamp_consistency CHECK (
    CASE
      WHEN status IN ('pending', 'pending_allocation', 'confirmed') THEN checked_in_at IS NULL AND checked_out_at IS NULL
      WHEN status = 'checked_in' THEN checked_in_at IS NOT NULL AND checked_out_at IS NULL
      WHEN status = 'completed' THEN checked_in_at IS NOT NULL AND checked_out_at IS NOT NULL
      WHEN status = 'no_show' THEN checked_in_at IS NULL AND checked_out_at IS NULL
      ELSE true
    END
  )
);
CREATE INDEX bookings_restaurant_date_idx ON public.bookings (restaurant_id, booking_date);

CREATE TABLE public.booking_table_assignments (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  booking_id uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
  table_id uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE RESTRICT,
  slot_id uuid REFERENCES public.booking_slots (id) ON DELETE SET NULL,
  assigned_at timestamptz NOT NULL DEFAULT now(),
  assigned_by uuid,
  notes text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  idempotency_key text,
  start_at timestamptz,
  end_at timestamptz,
  allocation_id uuid,
  merge_group_id uuid,
  assignment_window tstzrange GENERATED ALWAYS AS (tstzrange(start_at, end_at, '[)')) STORED,
  CONSTRAINT booking_table_assignments_booking_table_key UNIQUE (booking_id, table_id),
  CONSTRAINT booking_table_assignments_table_slot_key UNIQUE (table_id, slot_id),
  CONSTRAINT bta_no_overlap EXCLUDE USING gist (table_id WITH =, assignment_window WITH &&)
    WHERE (table_id IS NOT NULL),
  CONSTRAINT no_overlapping_table_assignments EXCLUDE USING gist (
    table_id WITH =, tstzrange(start_at, end_at, '[)') WITH &&
  ) WHERE (start_at IS NOT NULL AND end_at IS NOT NULL)
);
CREATE INDEX booking_table_assignments_booking_idx ON public.booking_table_assignments (booking_id);

CREATE TABLE public.allocations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  booking_id uuid REFERENCES public.bookings (id) ON DELETE CASCADE,
  resource_type text NOT NULL CHECK (resource_type IN ('table', 'hold', 'merge_group')),
  resource_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  shadow boolean NOT NULL DEFAULT false,
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  "window" tstzrange NOT NULL,
  created_by uuid,
  is_maintenance boolean NOT NULL DEFAULT false,
  CONSTRAINT allocations_booking_resource_key UNIQUE (booking_id, resource_type, resource_id),
  -- the current definition (migration 20251113203000): immediate, so the assign path can catch 23P01
  CONSTRAINT allocations_no_overlap EXCLUDE USING gist (
    restaurant_id WITH =, resource_type WITH =, resource_id WITH =, "window" WITH &&
  ) WHERE (NOT shadow) DEFERRABLE INITIALLY IMMEDIATE
);

ALTER TABLE public.booking_table_assignments
  ADD CONSTRAINT booking_table_assignments_allocation_id_fkey
    FOREIGN KEY (allocation_id) REFERENCES public.allocations (id) ON DELETE SET NULL,
  ADD CONSTRAINT booking_table_assignments_merge_group_id_fkey
    FOREIGN KEY (merge_group_id) REFERENCES public.allocations (id) ON DELETE SET NULL;

CREATE TABLE public.allocations_archive (
  id uuid PRIMARY KEY,
  booking_id uuid,
  resource_type text NOT NULL CHECK (resource_type IN ('table', 'hold', 'merge_group')),
  resource_id uuid NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz NOT NULL,
  shadow boolean NOT NULL,
  restaurant_id uuid NOT NULL,
  "window" tstzrange NOT NULL,
  created_by uuid,
  is_maintenance boolean NOT NULL,
  archived_at timestamptz NOT NULL DEFAULT timezone('utc', now())
);

CREATE TABLE public.table_holds (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  restaurant_id uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
  booking_id uuid REFERENCES public.bookings (id) ON DELETE SET NULL,
  zone_id uuid NOT NULL REFERENCES public.zones (id),
  start_at timestamptz NOT NULL,
  end_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  created_by uuid,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  metadata jsonb,
  CONSTRAINT table_holds_window_check CHECK (start_at < end_at),
  CONSTRAINT th_times_consistent CHECK (expires_at >= end_at)
);

CREATE TABLE public.table_hold_members (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  hold_id uuid NOT NULL REFERENCES public.table_holds (id) ON DELETE CASCADE,
  table_id uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE RESTRICT,
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT table_hold_members_hold_table_key UNIQUE (hold_id, table_id)
);

CREATE TABLE public.table_hold_windows (
  hold_id uuid NOT NULL REFERENCES public.table_holds (id) ON DELETE CASCADE,
  table_id uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE CASCADE,
  restaurant_id uuid NOT NULL,
  booking_id uuid,
  start_at timestamptz NOT NULL,
  end_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  hold_window tstzrange GENERATED ALWAYS AS (tstzrange(start_at, end_at, '[)')) STORED,
  PRIMARY KEY (hold_id, table_id),
  CONSTRAINT thw_no_overlap EXCLUDE USING gist (table_id WITH =, hold_window WITH &&)
);

CREATE TABLE public.booking_assignment_idempotency (
  booking_id uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
  idempotency_key text NOT NULL,
  table_ids uuid[] NOT NULL,
  assignment_window tstzrange NOT NULL,
  merge_group_allocation_id uuid REFERENCES public.allocations (id) ON DELETE SET NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  table_set_hash text,
  payload_checksum text,
  PRIMARY KEY (booking_id, idempotency_key)
);
CREATE UNIQUE INDEX booking_assignment_idempotency_booking_hash_key
  ON public.booking_assignment_idempotency (booking_id, table_set_hash) WHERE table_set_hash IS NOT NULL;

CREATE TABLE public.observability_events (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  created_at timestamptz NOT NULL DEFAULT timezone('utc', now()),
  source text NOT NULL,
  event_type text NOT NULL,
  severity text NOT NULL DEFAULT 'info' CHECK (severity IN ('info', 'warning', 'error', 'critical')),
  context jsonb,
  restaurant_id uuid,
  booking_id uuid
);
CREATE INDEX observability_events_created_at_idx ON public.observability_events (created_at DESC);
CREATE INDEX observability_events_source_idx ON public.observability_events (source, event_type);
CREATE INDEX observability_events_booking_idx ON public.observability_events (booking_id);

CREATE TABLE public.booking_state_history (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  booking_id uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
  from_status public.booking_status,
  to_status public.booking_status NOT NULL,
  changed_by uuid,
  changed_at timestamptz NOT NULL DEFAULT now(),
  reason text,
  metadata jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE TABLE public.audit_logs (
  id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
  entity text NOT NULL,
  entity_id text NOT NULL,
  action text NOT NULL,
  actor text,
  metadata jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- The captured tables keep REPLICA IDENTITY DEFAULT, as on the platform (domain.md §7.1): a DELETE event carries
-- the primary key only, an UPDATE event no before-image. Setting FULL needs table ownership, which an operator
-- of the platform may not have; allocguard must not depend on it.
