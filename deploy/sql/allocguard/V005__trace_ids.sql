-- The way back from data to trace: the span that handled an incident, a remediation, a hold announcement.
ALTER TABLE allocguard.incidents ADD COLUMN trace_id text, ADD COLUMN span_id text;
ALTER TABLE allocguard.remediations ADD COLUMN trace_id text, ADD COLUMN span_id text;
ALTER TABLE allocguard.hold_observations ADD COLUMN trace_id text, ADD COLUMN span_id text;
