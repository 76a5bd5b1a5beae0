-- Operators' bearer tokens for `allocguard serve` (the approval API): stored as SHA-256 hashes, never in clear.
-- Only the tables' owner writes them (`allocguard tokens add/revoke` with the owner's login); allocguard's runtime
-- role reads them to verify a request and cannot mint or revive one. `name` is the identity a decision records.
CREATE TABLE IF NOT EXISTS allocguard.api_tokens (
  name text PRIMARY KEY CONSTRAINT api_tokens_name_check CHECK (name ~ '^[A-Za-z0-9._@-]{1,64}$'),
  token_sha256 text NOT NULL UNIQUE,
  role text NOT NULL CONSTRAINT api_tokens_role_check CHECK (role IN ('viewer', 'approver')),
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz
);
-- allocguard's schema grants INSERT on new tables to the runtime role by default (its records are append-only):
-- not this one
REVOKE ALL ON allocguard.api_tokens FROM PUBLIC, allocguard_remediator;
GRANT SELECT ON allocguard.api_tokens TO allocguard_remediator;
