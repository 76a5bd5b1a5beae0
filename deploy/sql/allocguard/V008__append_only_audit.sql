-- allocguard's audit trail cannot be rewritten by the role that writes it: remediations and processed markers
-- are append-only for allocguard_remediator (INSERT and SELECT), incidents may change status but not vanish.
-- Tables added later get SELECT and INSERT by default; anything more is granted by the migration that needs it.
REVOKE UPDATE, DELETE, TRUNCATE ON allocguard.remediations, allocguard.processed_events FROM allocguard_remediator;
REVOKE DELETE, TRUNCATE ON allocguard.incidents FROM allocguard_remediator;
ALTER DEFAULT PRIVILEGES IN SCHEMA allocguard REVOKE UPDATE, DELETE ON TABLES FROM allocguard_remediator;
