-- Plans that wait for a person: mode approve, or a plan outside the guardrails (caps, allow/deny lists,
-- stale-by-status releases). Approving runs the same executor with the same re-check; the decision — who, when,
-- what came of it — is written once and never rewritten.
CREATE TABLE allocguard.plans (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  incident_id uuid NOT NULL REFERENCES allocguard.incidents (id),
  kind text NOT NULL CHECK (kind IN ('prune', 'release')),
  restaurant_id uuid NOT NULL,
  booking_id uuid NOT NULL,
  allocation_ids uuid[] NOT NULL,
  plan jsonb NOT NULL,
  why_pending text NOT NULL,
  status text NOT NULL DEFAULT 'pending'
    CHECK (status IN ('pending', 'executed', 'refused', 'rejected', 'expired')),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL,
  decided_by text,
  decided_at timestamptz,
  note text,
  outcome jsonb,
  trace_id text,
  span_id text,
  CONSTRAINT plans_decided CHECK ((status = 'pending') = (decided_at IS NULL))
);
CREATE UNIQUE INDEX plans_one_pending_per_incident ON allocguard.plans (incident_id) WHERE status = 'pending';
CREATE INDEX plans_pending_expiry_idx ON allocguard.plans (expires_at) WHERE status = 'pending';

CREATE FUNCTION allocguard.plans_decided_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.status <> 'pending' THEN
    RAISE EXCEPTION 'plan % is already %: a decision is final', OLD.id, OLD.status;
  END IF;
  IF NEW.status = 'pending' OR NEW.decided_by IS NULL THEN
    RAISE EXCEPTION 'plan %: a decision names who made it', OLD.id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER plans_decided_once BEFORE UPDATE ON allocguard.plans
  FOR EACH ROW EXECUTE FUNCTION allocguard.plans_decided_once();

GRANT SELECT, INSERT ON allocguard.plans TO allocguard_remediator;
GRANT UPDATE (status, decided_by, decided_at, note, outcome) ON allocguard.plans TO allocguard_remediator;

ALTER TABLE allocguard.incidents DROP CONSTRAINT incidents_status_check;
ALTER TABLE allocguard.incidents ADD CONSTRAINT incidents_status_check CHECK (status IN (
  'open', 'dry_run', 'pruned', 'resolved', 'not_needed', 'manual_review', 'awaiting_approval', 'rejected', 'expired'));

-- stale-by-status owners are released the platform's way: assignment and allocation together
GRANT EXECUTE ON FUNCTION public.unassign_tables_atomic(uuid, uuid[]) TO allocguard_remediator;
