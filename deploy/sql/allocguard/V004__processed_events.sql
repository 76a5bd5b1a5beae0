-- The effectively-once marker: a signal event whose effects are committed is recorded here, in the same
-- transaction as its last effect, so a redelivered or replayed copy of it is a no-op.
CREATE TABLE allocguard.processed_events (
  event_id uuid PRIMARY KEY,
  incident_id uuid REFERENCES allocguard.incidents (id) ON DELETE SET NULL,
  outcome text NOT NULL,
  processed_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE, DELETE ON allocguard.processed_events TO allocguard_remediator;
