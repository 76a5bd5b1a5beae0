-- Who asked for a plan: a person whose one-off command (`allocguard remediate --mode approve`) made it waits for
-- another person's decision (self-approval is refused unless ALLOCGUARD_ALLOW_SELF_APPROVAL). allocguard's own
-- plans (`run`) have none. Additive: the previous image inserts without it.
ALTER TABLE allocguard.plans ADD COLUMN IF NOT EXISTS requested_by text;
