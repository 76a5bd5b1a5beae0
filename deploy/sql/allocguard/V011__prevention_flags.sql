-- Prevention: allocations the platform has just left behind (an assignment row gone, a re-seat, a booking gone
-- terminal without release), flagged from CDC before any booking is blocked by them. One row per allocation;
-- a flag still inside the grace period is "watching" with a due time that survives restarts.
CREATE TABLE allocguard.prevention_flags (
  allocation_id uuid PRIMARY KEY,
  booking_id uuid NOT NULL,
  restaurant_id uuid NOT NULL,
  table_id uuid NOT NULL,
  verdict text NOT NULL,
  reason text NOT NULL,
  cause text NOT NULL,
  status text NOT NULL CHECK (status IN ('watching', 'pruned', 'released', 'held', 'flagged', 'cleared')),
  first_seen timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  due_at timestamptz,
  claimed_by text,
  remediation_id uuid,
  trace_id text,
  span_id text
);
CREATE INDEX prevention_flags_due_idx ON allocguard.prevention_flags (due_at) WHERE status = 'watching';
CREATE INDEX prevention_flags_booking_idx ON allocguard.prevention_flags (booking_id);
GRANT SELECT, INSERT, UPDATE ON allocguard.prevention_flags TO allocguard_remediator;
