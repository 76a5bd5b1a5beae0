-- Why an open incident waits, as a code: code branches on wait_code, never on status_reason's wording (which is for
-- people). Additive and nullable: during a rolling update the previous image keeps writing status_reason alone, and
-- its deferrals are still recognised (handlers/store.py reads a NULL wait_code the way that image wrote it).
ALTER TABLE allocguard.incidents ADD COLUMN IF NOT EXISTS wait_code text
  CONSTRAINT incidents_wait_code_check CHECK (wait_code IN ('hold_conflict', 'blockers'));
