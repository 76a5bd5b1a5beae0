-- allocguard keeps its own state apart from the platform's tables.
CREATE SCHEMA IF NOT EXISTS allocguard;
COMMENT ON SCHEMA allocguard IS 'State of the allocguard remediation consumer (incidents, evidence, markers).';
