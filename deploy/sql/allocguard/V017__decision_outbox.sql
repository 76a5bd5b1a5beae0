-- Decision requests, carried to where people are: a row per message to send about a plan that waits for a person
-- (it is pending; its expiry is near), written in the same transaction as the plan (or by the sender's sweep for
-- an expiry), delivered by `allocguard run`'s sender to the configured webhooks. `dedupe_key` makes each message
-- once across replicas and restarts; the sender claims rows with FOR UPDATE SKIP LOCKED, so two replicas never
-- send the same row at once; a delivery that succeeded is never sent again.
CREATE TABLE IF NOT EXISTS allocguard.outbox (
  id bigserial PRIMARY KEY,
  kind text NOT NULL CONSTRAINT outbox_kind_check CHECK (kind IN ('plan_pending', 'plan_expiring')),
  dedupe_key text NOT NULL UNIQUE,
  plan_id uuid NOT NULL REFERENCES allocguard.plans (id),
  created_at timestamptz NOT NULL DEFAULT now(),
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  attempts integer NOT NULL DEFAULT 0,
  -- the targets (webhook, slack) that took it: a retry goes only to the others
  delivered_to text[] NOT NULL DEFAULT '{}',
  -- delivered, or given up on because the plan was decided or expired before it could be sent
  done_at timestamptz,
  outcome text CONSTRAINT outbox_outcome_check CHECK (outcome IN ('delivered', 'moot')),
  last_error text,
  CONSTRAINT outbox_done CHECK ((done_at IS NULL) = (outcome IS NULL))
);
CREATE INDEX IF NOT EXISTS outbox_due_idx ON allocguard.outbox (next_attempt_at) WHERE done_at IS NULL;
GRANT SELECT, INSERT ON allocguard.outbox TO allocguard_remediator;
GRANT UPDATE (next_attempt_at, attempts, delivered_to, done_at, outcome, last_error) ON allocguard.outbox TO allocguard_remediator;
GRANT USAGE ON SEQUENCE allocguard.outbox_id_seq TO allocguard_remediator;
