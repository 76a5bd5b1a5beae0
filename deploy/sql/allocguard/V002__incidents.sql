-- Incidents, the holds they were attempted on, and the remediations applied to them.

-- capacity.hold.created events, remembered so a later failure of that hold knows its tables and window.
-- Rows expire (expires_at) and are swept; they survive restarts.
CREATE TABLE allocguard.hold_observations (
  hold_id uuid PRIMARY KEY,
  booking_id uuid,
  restaurant_id uuid,
  table_ids uuid[] NOT NULL,
  attempt_window tstzrange NOT NULL,
  require_adjacency boolean,
  observed_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL
);
CREATE INDEX hold_observations_expires_idx ON allocguard.hold_observations (expires_at);

-- One incident per (booking, attempted window), however many failure events the platform emits for it.
CREATE TABLE allocguard.incidents (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  booking_id uuid NOT NULL,
  restaurant_id uuid NOT NULL,
  attempt_window tstzrange NOT NULL,
  table_ids uuid[] NOT NULL DEFAULT '{}',
  hold_id uuid,
  require_adjacency boolean,
  window_source text NOT NULL CHECK (window_source IN ('hold', 'booking')),
  status text NOT NULL DEFAULT 'open'
    CHECK (status IN ('open', 'dry_run', 'pruned', 'resolved', 'not_needed', 'manual_review')),
  status_reason text,
  event_count integer NOT NULL DEFAULT 1,
  source_events jsonb NOT NULL DEFAULT '[]'::jsonb,
  first_event_at timestamptz NOT NULL DEFAULT now(),
  last_event_at timestamptz NOT NULL DEFAULT now(),
  outcome jsonb,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT incidents_booking_window_key UNIQUE (booking_id, attempt_window)
);

-- Every prune (or dry-run plan): who, what, why, and the rows before and after.
CREATE TABLE allocguard.remediations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  incident_id uuid REFERENCES allocguard.incidents (id) ON DELETE SET NULL,
  plan_key text NOT NULL UNIQUE,
  mode text NOT NULL CHECK (mode IN ('auto', 'dry_run')),
  actor text NOT NULL,
  reason text NOT NULL,
  allocation_ids uuid[] NOT NULL,
  evidence jsonb NOT NULL,
  before_rows jsonb NOT NULL,
  after_rows jsonb NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
