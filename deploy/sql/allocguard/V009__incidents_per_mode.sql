-- Records that tell the truth: an incident is per (booking, attempted window, mode), so a dry-run instance
-- running beside an auto one keeps its own record and never overwrites what the auto instance did.
ALTER TABLE allocguard.incidents ADD COLUMN mode text NOT NULL DEFAULT 'auto' CHECK (mode IN ('auto', 'dry_run'));
UPDATE allocguard.incidents SET mode = 'dry_run' WHERE status = 'dry_run';
ALTER TABLE allocguard.incidents DROP CONSTRAINT incidents_booking_window_key;
ALTER TABLE allocguard.incidents ADD CONSTRAINT incidents_booking_window_mode_key
  UNIQUE (booking_id, attempt_window, mode);
