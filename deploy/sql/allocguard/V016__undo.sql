-- Undo (`allocguard undo`): a person reverses a remediation as a whole — the victim's assignment that allocguard
-- made released through the platform's own function, the archived allocations restored exactly, and pinned: a
-- pinned allocation is PROTECTED in every later plan, prevention and reconcile until `allocguard unpin`.
--
-- Restoring inserts into public.allocations, which allocguard's runtime role must never do: undo runs as a login of
-- allocguard_undo (a member of allocguard_remediator, plus INSERT on allocations and the pins), never as the
-- runtime's login. The runtime reads the pins and cannot write them.
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'allocguard_undo') THEN
    CREATE ROLE allocguard_undo NOLOGIN;
  END IF;
END $$;
GRANT allocguard_remediator TO allocguard_undo;

CREATE TABLE IF NOT EXISTS allocguard.pins (
  allocation_id uuid PRIMARY KEY,
  pinned_by text NOT NULL,
  note text,
  -- the undo's own remediation record
  remediation_id uuid REFERENCES allocguard.remediations (id),
  pinned_at timestamptz NOT NULL DEFAULT now()
);
REVOKE INSERT, UPDATE, DELETE ON allocguard.pins FROM allocguard_remediator;
GRANT SELECT ON allocguard.pins TO allocguard_remediator;
GRANT SELECT, INSERT, DELETE ON allocguard.pins TO allocguard_undo;

GRANT INSERT ON public.allocations TO allocguard_undo;
DO $$
BEGIN
  IF to_regclass('public.allocations') IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM pg_policies WHERE schemaname = 'public' AND tablename = 'allocations'
       AND policyname = 'allocguard_undo_insert'
  ) THEN
    CREATE POLICY allocguard_undo_insert ON public.allocations FOR INSERT TO allocguard_undo WITH CHECK (true);
  END IF;
END $$;
