-- The hourly guardrail counts a restaurant's remediations of the last hour before every plan it lets through.
-- Without these it read every remediation ever recorded (4 ms a plan on a few weeks' history, and growing — a
-- quarter of PostgreSQL's work per remediation in a storm); with them it reads the restaurant's own incidents.
-- The second also serves the foreign key's ON DELETE SET NULL when incidents are purged.
CREATE INDEX IF NOT EXISTS incidents_restaurant_idx ON allocguard.incidents (restaurant_id);
CREATE INDEX IF NOT EXISTS remediations_incident_idx ON allocguard.remediations (incident_id, created_at);
