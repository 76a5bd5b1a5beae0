-- Waits that wake up: a `wait` decision stores when it can next change (a young blocker's grace expiry, an
-- owner's hold expiry); the running consumers re-plan due incidents with no new platform event. A claim moves
-- next_check_at forward atomically, so one instance re-plans a given incident; a claim that is not settled in
-- time (the instance died) falls due again.
ALTER TABLE allocguard.incidents ADD COLUMN next_check_at timestamptz, ADD COLUMN claimed_by text;
CREATE INDEX incidents_due_idx ON allocguard.incidents (next_check_at) WHERE status = 'open' AND next_check_at IS NOT NULL;

-- `allocguard check` tells whether the schema is current: the runtime role may read (only read) the ledger.
GRANT SELECT ON allocguard.schema_migrations TO allocguard_remediator;
